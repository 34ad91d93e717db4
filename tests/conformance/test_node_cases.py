"""ONNX's per-operator backend cases on `ref` (the oracle is the expected
output ONNX ships with each case)."""

from __future__ import annotations

import collections

from heli.conformance import case_op, heli_runner, node_cases, run_case

# The foundation's bar is 85% of all cases (unsupported counts as failed).
MIN_PASS_RATE = 0.85


def test_ref_passes_the_onnx_node_cases():
    cases = node_cases()
    runner = heli_runner("ref")
    results = [run_case(case, runner) for case in cases]
    counts = collections.Counter(r.status for r in results)
    rate = counts["pass"] / len(results)
    failing = collections.Counter(case_op(c) for c, r in zip(cases, results, strict=True)
                                  if r.status != "pass")
    assert rate >= MIN_PASS_RATE, (
        f"{counts['pass']}/{len(results)} passed ({rate:.1%}); most failing ops: "
        f"{failing.most_common(15)}"
    )


def test_a_failing_case_is_reported_as_failed_not_crashed():
    case = next(c for c in node_cases() if c.name == "test_relu")

    def wrong(model, inputs):
        return [inputs[0]]  # not Relu

    result = run_case(case, wrong)
    assert result.status == "fail" and "values differ" in result.detail
