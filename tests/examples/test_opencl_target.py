"""examples/heli-target-opencl: the out-of-tree OpenCL target, installed into
the repo's venv with pip like any vendor plugin, run on PoCL (a CPU OpenCL
driver) against ONNX Runtime, and held to the vendor-guide rules (public API
only, a small source)."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import heli
from heli.target import available_targets, get_target, register_target
from tests.conftest import assert_close, run_onnxruntime

ROOT = Path(__file__).resolve().parents[2] / "examples" / "heli-target-opencl"
SOURCE = ROOT / "src" / "heli_target_opencl"
MAX_LINES = 400
PUBLIC = ("heli", "heli.target", "heli.ir", "heli.kernel", "heli.conformance")


def _installed() -> bool:
    return any(ep.name == "opencl" for ep in metadata.entry_points(group="heli.targets"))


@pytest.fixture(scope="module")
def opencl():
    """The target, pip-installed (editable) into this venv if it is not yet."""
    if not _installed():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-build-isolation", "--disable-pip-version-check", "-e", str(ROOT)],
                       check=True)
        # This interpreter started before the install: make the package importable now
        # (new processes, `heli` on the command line included, find it installed).
        sys.path.insert(0, str(SOURCE.parent))
    import pyopencl as cl

    try:
        cl.create_some_context(interactive=False)
    except cl.Error as error:  # no ICD: `make tools` installs PoCL (pocl-opencl-icd)
        pytest.skip(f"no OpenCL platform can be created here ({error}); run `make tools`")
    from heli_target_opencl import OpenCLTarget

    if "opencl" not in available_targets():  # targets were discovered before the install
        register_target(OpenCLTarget)
    return get_target("opencl")


def _placement(model) -> dict[str, int]:
    placement = next(iter(model.specializations.values())).placement
    counts: dict[str, int] = {}
    for target, nodes in placement.segments:
        counts[target] = counts.get(target, 0) + len(nodes)
    return counts


def _small_model():
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((3, 32, 8)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),        # + Add: becomes Gemm
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("Mul", ["r", "s"], ["m"]),             # broadcast [5, 32] * [32]
        helper.make_node("Unsqueeze", ["m", "axes"], ["u"]),    # falls back to ref
        helper.make_node("MatMul", ["u", "w2"], ["bm"]),       # batch-broadcast MatMul
        helper.make_node("Tanh", ["bm"], ["t"]),
        helper.make_node("Softmax", ["t"], ["y"], axis=-1),     # falls back to ref
    ]
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    graph = helper.make_graph(
        nodes, "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 16]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w1, b1, w2, axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_entry_point_registers_the_target(opencl):
    from heli_target_opencl import OPS, OpenCLTarget

    assert isinstance(opencl, OpenCLTarget)
    assert {"MatMul", "Gemm", "Add", "Relu"} <= set(opencl.capabilities()["ops"]) == set(OPS)


def test_a_small_model_matches_onnxruntime_with_fallback(opencl):
    model = _small_model()
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((5, 16)).astype(np.float32),
             "s": rng.standard_normal(32).astype(np.float32)}
    with pytest.warns(heli.FallbackWarning, match="Softmax"):
        compiled = heli.compile(model, target="opencl", fallback=("ref",))
        got = compiled.run(feeds)
    assert_close(got["y"], run_onnxruntime(model, feeds)["y"], 1e-3, 1e-4, "y")
    placement = next(iter(compiled.specializations.values())).placement
    ran = {t: [n for s, ns in placement.segments if s == t for n in ns] for t in ("opencl", "ref")}
    print("placement:", _placement(compiled), "fallback:", placement.fallback_reasons)
    assert len(ran["opencl"]) == 5 and len(ran["ref"]) == 2  # Gemm, Relu, Mul, MatMul, Tanh
    assert "no opencl kernel for Softmax" in placement.fallback_reasons.values()


def _opencl_mac_share(model) -> float:
    """The share of the Conv/MatMul/Gemm multiply-accumulates run by opencl stages."""
    from heli.cli._explain import node_macs

    (spec,) = model.specializations.values()
    macs = {"opencl": 0, "ref": 0}
    for stage in spec.stages:
        macs[stage.target] += sum(node_macs(n) for n in stage.graph.nodes)
    return macs["opencl"] / sum(macs.values())


def _check_real_model(path, name: str, shape: tuple[int, ...], fallback_op: str):
    """Compile with fallback, compare with ONNX Runtime, and return (placement, MAC share)."""
    feeds = {name: np.random.default_rng(2).standard_normal(shape).astype(np.float32)}
    with pytest.warns(heli.FallbackWarning, match=fallback_op):
        compiled = heli.compile(str(path), target="opencl", input_shapes={name: shape},
                                fallback=("ref",))
        got = compiled.run(feeds)
    want = run_onnxruntime(str(path), feeds)
    for out, value in want.items():
        assert_close(got[out], value, 1e-3, 1e-4, out)
    share = _opencl_mac_share(compiled)
    print(f"{path.name}: placement {_placement(compiled)}, {share:.1%} of MACs on opencl")
    return _placement(compiled), share


def test_resnet18_matches_onnxruntime(opencl):
    from heli.testing import resnet18_onnx

    counts, share = _check_real_model(resnet18_onnx(), "input", (1, 3, 224, 224), "MaxPool")
    assert counts["opencl"] >= 40 and counts["ref"] >= 2  # Conv/Relu/Add/Gemm; pools on ref
    assert share > 0.5


@pytest.mark.slow
def test_mobilenetv2_matches_onnxruntime(opencl):
    from heli.testing import mobilenetv2_onnx

    counts, share = _check_real_model(mobilenetv2_onnx(), "input", (1, 3, 224, 224),
                                      "GlobalAveragePool")
    assert counts["ref"] >= 1 and share > 0.5  # depthwise and pointwise Conv on opencl


@pytest.mark.slow
def test_ppocr_rec_matches_onnxruntime(opencl):
    from heli.testing import ppocr_model

    counts, share = _check_real_model(ppocr_model("rec"), "x", (1, 3, 48, 320),
                                      "LayerNormalization")
    assert counts["ref"] >= 1 and share > 0.5


def test_onnx_cases_of_matmul_and_gemm_pass(opencl):
    from heli.conformance import case_op, heli_runner, node_cases, run_case

    results = [run_case(c, heli_runner("opencl")) for c in node_cases()
               if case_op(c) in ("MatMul", "Gemm", "Conv", "Add", "Sigmoid")]
    assert not [(r.name, r.detail) for r in results if r.status == "fail"]
    assert sum(r.status == "pass" for r in results) >= 20
    conv = [r for r in results if r.op == "Conv" and r.status == "pass"]
    assert len(conv) >= 5, [(r.name, r.status, r.detail) for r in results if r.op == "Conv"]


def test_the_package_is_small_and_uses_only_public_heli():
    files = sorted(SOURCE.rglob("*.py"))
    lines = sum(len(f.read_text().splitlines()) for f in files)
    assert lines <= MAX_LINES, f"{lines} source lines"
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                modules = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [(node.module, [a.name for a in node.names])]
            else:
                continue
            for module, names in modules:
                if module.split(".")[0] != "heli":
                    continue
                assert module in PUBLIC, f"{f.name} imports the private module {module}"
                exported = __import__(module, fromlist=["_"]).__all__
                for name in names or ():
                    assert name in exported, f"{f.name} imports {module}.{name} (not in __all__)"
