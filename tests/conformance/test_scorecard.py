"""Scorecards (``heli conformance --report``): what a target claims of ONNX's node
cases, how much of a real model it runs, and the Markdown/JSON files written."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import heli
from heli.conformance import (
    RealModel,
    case_op,
    heli_runner,
    node_cases,
    render_markdown,
    run_case,
    run_real_model,
    scorecard,
    write_report,
)
from heli.target import Support, register_target
from heli.targets.ref import RefTarget


class ReluOnly(RefTarget):
    """``ref``'s kernels, claiming Relu nodes only."""

    name = "relu-only"
    description = "ref, Relu only (a test target)"

    def supports(self, node):
        if node.op.name != "Relu":
            return Support(False, f"relu-only does not run {node.op.name}")
        return super().supports(node)


@pytest.fixture(scope="module")
def relu_only():
    register_target(ReluOnly)
    return "relu-only"


def cli(capsys, *args):
    from heli.cli._main import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _matmul_relu(path) -> None:
    """y = Relu(x @ w), x: [2, 8], w: [8, 4] (64 MACs), written to ``path``."""
    w = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_unclaimed_cases_are_unsupported_and_counted_apart(relu_only, tmp_path):
    cases = [c for c in node_cases() if case_op(c) in ("Relu", "Sigmoid")]
    results = [run_case(c, heli_runner(relu_only)) for c in cases]
    card = scorecard(relu_only, results, [], [])
    nc = card["node_cases"]
    # claimed: the cases made of Relu nodes only (not Relu's expanded form, not Sigmoid)
    claimed = [c for c in cases if {n.op_type for n in c.model.graph.node} == {"Relu"}]
    relu = sum(case_op(c) == "Relu" for c in cases)
    assert len(claimed) >= 1 and relu > len(claimed) and len(cases) > relu
    assert (nc["pass"], nc["fail"], nc["unsupported"]) == (
        len(claimed), 0, len(cases) - len(claimed))
    assert nc["claimed"] == len(claimed) and nc["pass_rate_of_claimed"] == 1.0
    assert nc["per_op"]["Sigmoid"] == {"pass": 0, "fail": 0, "unsupported": len(cases) - relu}
    md, js = write_report(tmp_path, card)
    assert (md.name, js.name) == ("relu-only.md", "relu-only.json")
    assert json.loads(js.read_text()) == card
    text = md.read_text()
    n = len(claimed)
    assert f"| claimed cases passed | **{n} / {n} (100.0%)** |" in text
    assert f"| Relu | {relu} | {n} |  | {relu - n} |" in text
    assert "Ops with no claimed case (1): Sigmoid." in text


def test_a_real_model_reports_accuracy_and_the_share_run_on_the_target(relu_only, tmp_path):
    path = tmp_path / "mm.onnx"
    _matmul_relu(path)
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    model = RealModel("mm", "MatMul + Relu, 2x8", lambda: (path, {"x": x}, []))
    score = run_real_model(model, relu_only)
    assert score.status == "pass" and score.max_abs == 0.0
    assert score.nodes == {"ref": 1, "relu-only": 1}
    assert score.macs == {"ref": 2 * 8 * 4, "relu-only": 0}  # the MatMul fell back
    assert score.flops == {"ref": 2 * 2 * 8 * 4, "relu-only": 2 * 4}
    text = render_markdown(scorecard(relu_only, [], [], [score]))
    assert "| mm | MatMul + Relu, 2x8 | pass | 0.00e+00 | 0.00e+00 | 50.0% of 2 | 0.0% of 64 |" \
        in text


def test_a_model_that_cannot_run_is_an_error_row_not_a_crash(relu_only, tmp_path):
    def missing():
        raise heli.ModelLoadError("no such model 'gone.onnx'.")

    score = run_real_model(RealModel("gone", "missing", missing), relu_only)
    assert score.status == "error" and "ModelLoadError: no such model 'gone.onnx'" in score.detail
    assert "| gone | missing | error: ModelLoadError: no such model" in render_markdown(
        scorecard(relu_only, [], [], [score]))


def test_the_report_option_writes_markdown_and_json(capsys, tmp_path):
    out = tmp_path / "cards"
    code, stdout, err = cli(capsys, "conformance", "--target", "ref", "--filter", "test_relu",
                            "--report", out)
    assert code == 0, err
    card = json.loads((out / "ref.json").read_text())
    relu_cases = [c for c in node_cases("test_relu")]
    assert card["node_cases"]["total"] == len(relu_cases) == card["node_cases"]["pass"]
    assert card["real_models"] == [] and card["light_models"]["total"] == 0
    assert card["command"] == f"heli conformance --target ref --filter test_relu --report {out}"
    text = (out / "ref.md").read_text()
    assert text.startswith("# Scorecard: target `ref`")
    assert f"wrote {out / 'ref.md'}" in stdout


@pytest.mark.slow
def test_the_report_runs_a_real_test_model(capsys, tmp_path):
    code, stdout, err = cli(capsys, "conformance", "--target", "ref", "--filter", "ppocr-cls",
                            "--report", tmp_path)
    assert code == 0, err
    (model,) = json.loads((tmp_path / "ref.json").read_text())["real_models"]
    assert model["name"] == "ppocr-cls" and model["status"] == "pass"
    assert model["macs"]["ref"] > 10_000_000 and list(model["macs"]) == ["ref"]
    assert "| ppocr-cls | PP-OCR direction classifier" in (tmp_path / "ref.md").read_text()


def test_report_options_are_checked_before_any_work(capsys, tmp_path):
    code, _, err = cli(capsys, "conformance", "--quantize", "--filter", "test_relu")
    assert code == 2 and "give --report DIR too" in err
    afile = tmp_path / "file.md"
    afile.write_text("")
    code, _, err = cli(capsys, "conformance", "--filter", "test_relu", "--report", afile)
    assert code == 2 and f"--report {str(afile)!r} exists and is not a directory" in err


def test_targets_markdown_lists_every_target(capsys):
    code, stdout, _ = cli(capsys, "targets", "--markdown")
    assert code == 0
    assert "| name | version | API | package | capabilities | description |" in stdout
    assert "| ref | 0.1.0 | 1 | heli |" in stdout


def test_targets_markdown_lists_every_built_in_target_with_its_capabilities(capsys):
    from heli.cli import main

    assert main(["targets", "--markdown"]) == 0
    rows = {line.split(" | ")[0].lstrip("| "): line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and not line.startswith("| name")}
    assert {"ref", "cpu", "npu"} <= set(rows)
    assert "dtypes: every ONNX type" in rows["ref"]
    assert "ops (Abs, Add," in rows["cpu"] and "dtypes: float32" in rows["cpu"]
    assert "heli:QConv" in rows["npu"] and "array: 16x16 int8 systolic" in rows["npu"]
    assert "(not declared)" not in "".join(rows[t] for t in ("ref", "cpu", "npu"))
