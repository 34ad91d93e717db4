"""ONNX's per-operator backend test cases, run against any target."""

from __future__ import annotations

import contextlib
import functools
import io
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from heli._errors import HeliError, UnsupportedError


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one test case on one engine."""

    name: str
    op: str  # the op type the case is about (its first node's type)
    status: str  # "pass", "fail" or "unsupported"
    detail: str = ""
    seconds: float = 0.0


def node_cases(pattern: str | None = None) -> list[Any]:
    """ONNX's generated node test cases (``onnx.backend.test.case``), by name."""
    from onnx.backend.test.case import node

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            cases = node.collect_testcases(None)
    cases = [c for c in cases if c.kind == "node"]
    if pattern:
        cases = [c for c in cases if pattern in c.name]
    return sorted(cases, key=lambda c: c.name)


def case_op(case: Any) -> str:
    """The op a case tests: the longest ONNX op name its case name starts with."""
    key = case.name.removeprefix("test_").replace("_", "").lower()
    matches = [name for name in _op_names() if key.startswith(name.lower())]
    if matches:
        return max(matches, key=len)
    nodes = case.model.graph.node
    return nodes[0].op_type if nodes else "?"


@functools.cache
def _op_names() -> tuple[str, ...]:
    import onnx

    return tuple({schema.name for schema in onnx.defs.get_all_schemas_with_history()})


Runner = Callable[[Any, list[Any]], list[Any]]


def heli_runner(target: str, debug: bool = True) -> Runner:
    """Runs a case's model on a Heli target.

    ``debug`` verifies the IR after each pass and checks every computed array
    against its inferred type, so wrong type inference fails the case too.
    """
    import heli

    def run(model: Any, inputs: list[Any]) -> list[Any]:
        compiled = heli.compile(model, target=target, fallback=(), debug=debug)
        feeds = dict(zip([i.name for i in _real_inputs(model)], inputs, strict=False))
        result = compiled.run(feeds)
        return [result[name] for name in compiled.output_names]

    return run


def onnxruntime_runner() -> Runner:
    """Runs a case's model on ONNX Runtime (the anchor)."""
    import onnxruntime as ort

    def run(model: Any, inputs: list[Any]) -> list[Any]:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return session.run(None, dict(zip(names, inputs, strict=False)))

    return run


def _real_inputs(model: Any) -> list[Any]:
    initialized = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initialized]


def run_case(case: Any, runner: Runner, unsupported: tuple[type, ...] = (UnsupportedError,)
             ) -> CaseResult:
    """Run every data set of ``case``; compare with the expected outputs."""
    op = case_op(case)
    start = time.perf_counter()
    try:
        for inputs, expected in case.data_sets:
            inputs, expected = _arrays(inputs), _arrays(expected)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = runner(case.model, list(inputs))
            problem = compare_outputs(expected, got, case.rtol, case.atol)
            if problem:
                return CaseResult(case.name, op, "fail", problem, time.perf_counter() - start)
    except unsupported as error:
        return CaseResult(case.name, op, "unsupported", str(error), time.perf_counter() - start)
    except HeliError as error:
        return CaseResult(case.name, op, "fail", f"{type(error).__name__}: {error}",
                          time.perf_counter() - start)
    except Exception as error:  # an engine's crash is a failed case, not a crashed suite
        return CaseResult(case.name, op, "fail", f"{type(error).__name__}: {error}"[:500],
                          time.perf_counter() - start)
    return CaseResult(case.name, op, "pass", "", time.perf_counter() - start)


def _arrays(values: Sequence[Any]) -> list[Any]:
    """Case data as arrays: some cases store TensorProtos (float8, int4 ...)."""
    from onnx import TensorProto, numpy_helper

    return [numpy_helper.to_array(v) if isinstance(v, TensorProto) else v for v in values]


def compare_outputs(expected: Sequence[Any], got: Sequence[Any], rtol: float, atol: float) -> str:
    """'' if ``got`` matches ``expected`` (as ONNX's backend tests judge), else why not."""
    if len(got) != len(expected):
        return f"expected {len(expected)} outputs, got {len(got)}"
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        problem = _compare(want, have, rtol, atol)
        if problem:
            return f"output {index}: {problem}"
    return ""


def _compare(want: Any, have: Any, rtol: float, atol: float) -> str:
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            return f"expected a sequence of {len(want)} tensors, got {type(have).__name__}"
        for w, h in zip(want, have, strict=True):
            problem = _compare(w, h, rtol, atol)
            if problem:
                return problem
        return ""
    if want is None:
        return "" if have is None else "expected an empty optional"
    want = np.asarray(want)
    if have is None:
        return "got no value"
    have = np.asarray(have)
    if want.dtype != have.dtype:
        return f"dtype {have.dtype} != expected {want.dtype}"
    if want.shape != have.shape:
        return f"shape {list(have.shape)} != expected {list(want.shape)}"
    if want.dtype == object:
        return "" if np.array_equal(want, have) else "string values differ"
    if want.dtype.kind not in "fc" and want.dtype.kind not in "iub":
        w, h = want.astype(np.float64), have.astype(np.float64)  # ml_dtypes floats
    else:
        w, h = want, have
    try:
        np.testing.assert_allclose(h, w, rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError as error:
        lines = [line for line in str(error).splitlines() if "Max" in line or "Mismatch" in line]
        return "values differ: " + "; ".join(lines)
    return ""


def run_cases(cases: Iterable[Any], runner: Runner,
              progress: Callable[[CaseResult], None] | None = None) -> list[CaseResult]:
    results = []
    for case in cases:
        result = run_case(case, runner)
        results.append(result)
        if progress:
            progress(result)
    return results
