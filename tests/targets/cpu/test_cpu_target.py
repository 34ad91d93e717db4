"""The cpu target: capabilities, fusion inside compile, generated kernels
against the ref target, the real models against ONNX Runtime (rtol 1e-3,
atol 1e-4), and the ONNX node cases of every op it claims."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import heli
from heli._api import FallbackWarning
from heli.target import get_target
from tests.conftest import assert_close, run_onnxruntime

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC") or "cc") is None,
                                reason="no C compiler")

RTOL, ATOL = 1e-3, 1e-4


def make_model(nodes, inputs, outputs, initializers=(), opset=18):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(initializers).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def check_vs_ref(model, feeds, rtol=1e-5, atol=1e-5, expect_all_cpu=True):
    with warnings.catch_warnings():
        warnings.simplefilter("error" if expect_all_cpu else "ignore", FallbackWarning)
        compiled = heli.compile(model, "cpu", debug=True)
        got = compiled.run(feeds)
    want = heli.compile(model, "ref").run(feeds)
    for name, value in want.items():
        assert_close(got[name], value, rtol, atol, what=name)
    return compiled


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------- capabilities

def test_registered_through_the_entry_point():
    target = get_target("cpu")
    assert target.name == "cpu"
    rules = target.fusion_rules()
    assert {"Conv", "MatMul", "Gemm"} <= rules.anchors and "Relu" in rules.epilogue


def test_refuses_with_reasons_and_falls_back_to_ref():
    model = make_model(
        [helper.make_node("Relu", ["x"], ["r"]),
         helper.make_node("TopK", ["r", "k"], ["v", "i"], axis=-1),
         helper.make_node("Softmax", ["v"], ["y"], axis=0)],
        [("x", [2, 6])], ["y"], {"k": np.array([3], np.int64)})
    x = rand(2, 6)
    with pytest.warns(FallbackWarning, match="TopK") as caught:
        compiled = heli.compile(model, "cpu")
        got = compiled.run({"x": x})["y"]
    message = str(caught[0].message)
    assert "no kernel for TopK" in message and "last axis only" in message
    np.testing.assert_allclose(got, heli.compile(model, "ref").run({"x": x})["y"], rtol=1e-6)
    placement = next(iter(compiled.specializations.values())).placement
    assert [t for t, _ in placement.segments] == ["cpu", "ref"]


# ------------------------------------------------------- convolutions etc.

CONVS = {  # (C_in, C_out, kernel, stride, pad, group, dilation)
    "1x1": (8, 16, 1, 1, 0, 1, 1),
    "3x3": (5, 7, 3, 1, 1, 1, 1),
    "3x3_s2": (5, 7, 3, 2, 1, 1, 1),
    "7x7_s2": (3, 8, 7, 2, 3, 1, 1),
    "1x3": (4, 6, (1, 3), 1, (0, 1), 1, 1),
    "dilated": (4, 4, 3, 1, 2, 1, 2),
    "grouped": (8, 12, 3, 1, 1, 4, 1),
    "depthwise": (8, 8, 3, 1, 1, 8, 1),
    "depthwise_5x5_s2": (8, 8, 5, 2, 2, 8, 1),
    "1x1_s2": (6, 4, 1, 2, 0, 1, 1),
}


@pytest.mark.parametrize("name", sorted(CONVS))
@pytest.mark.parametrize("epilogue", ["none", "relu_residual", "clip_hardswish"])
def test_conv_with_fused_epilogue(name, epilogue):
    cin, cout, k, stride, pad, group, dil = CONVS[name]
    kh, kw = (k, k) if isinstance(k, int) else k
    ph, pw = (pad, pad) if isinstance(pad, int) else pad
    inits = {"w": rand(cout, cin // group, kh, kw, seed=1), "b": rand(cout, seed=2),
             "b2": rand(cout, 1, 1, seed=3), "lo": np.float32(0), "hi": np.float32(6)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[stride] * 2,
                              pads=[ph, pw, ph, pw], group=group, dilations=[dil] * 2)]
    out = "c"
    if epilogue == "relu_residual":
        nodes += [helper.make_node("Add", ["c", "b2"], ["t"]),
                  helper.make_node("Relu", ["t"], ["r"]),
                  helper.make_node("Add", ["r", "c"], ["y"])]
        out = "y"
    elif epilogue == "clip_hardswish":
        nodes += [helper.make_node("Clip", ["c", "lo", "hi"], ["t"]),
                  helper.make_node("HardSwish", ["t"], ["y"])]
        out = "y"
    model = make_model(nodes, [("x", [2, cin, 11, 10])], [out], inits)
    compiled = check_vs_ref(model, {"x": rand(2, cin, 11, 10, seed=4)}, 1e-5, 1e-5)
    graph = next(iter(compiled.specializations.values())).graph
    assert graph.nodes  # the fused graph is what ran; fusion happens in the target


@pytest.mark.asan
@pytest.mark.parametrize("size", [6, 20])
def test_depthwise_on_small_and_large_planes(size):
    """Small planes run with channels in vector lanes, large ones a channel
    at a time (LANES_MAX_PIXELS); 20 channels leave a partial block of lanes."""
    inits = {"w": rand(20, 1, 3, 3, seed=1), "b": rand(20, seed=2),
             "lo": np.float32(0), "hi": np.float32(6)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], group=20),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]
    model = make_model(nodes, [("x", [1, 20, size, size])], ["y"], inits)
    check_vs_ref(model, {"x": rand(1, 20, size, size, seed=3)}, 1e-5, 1e-5)


TRANSPOSED = {  # (C_in, C_out, kernel, stride, pad, output_padding)
    "2x2_s2": (6, 5, 2, 2, 0, 0),  # taps tile the output: SGEMM + interleave
    "3x3_s2": (4, 3, 3, 2, 1, 1),  # overlapping taps: SGEMM + col2im
    "3x1_s1": (3, 4, (3, 1), 1, 0, 0),
}


@pytest.mark.asan
@pytest.mark.parametrize("name", sorted(TRANSPOSED))
@pytest.mark.parametrize("epilogue", ["none", "bias_bn_relu", "sigmoid"])
def test_conv_transpose_with_fused_epilogue(name, epilogue):
    """PP-OCR det's head: ConvTranspose, an exported bias Add, BatchNorm, Relu."""
    cin, cout, k, stride, pad, out_pad = TRANSPOSED[name]
    kh, kw = (k, k) if isinstance(k, int) else k
    inits = {"w": rand(cin, cout, kh, kw, seed=1), "b": rand(cout, 1, 1, seed=2),
             "scale": rand(cout, seed=3), "shift": rand(cout, seed=4),
             "mean": rand(cout, seed=5), "var": np.abs(rand(cout, seed=6)) + 0.5}
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["c"], strides=[stride] * 2,
                              pads=[pad] * 4, output_padding=[out_pad] * 2)]
    out = "c"
    if epilogue == "bias_bn_relu":
        nodes += [helper.make_node("Add", ["c", "b"], ["t"]),
                  helper.make_node("BatchNormalization", ["t", "scale", "shift", "mean", "var"],
                                   ["n"]),
                  helper.make_node("Relu", ["n"], ["y"])]
        out = "y"
    elif epilogue == "sigmoid":
        nodes += [helper.make_node("Sigmoid", ["c"], ["y"])]
        out = "y"
    model = make_model(nodes, [("x", [2, cin, 7, 6])], [out], inits)
    check_vs_ref(model, {"x": rand(2, cin, 7, 6, seed=7)}, 1e-5, 1e-5)


def test_pooling_and_means():
    nodes = [
        helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["m"], ["a"], kernel_shape=[2, 3], pads=[0, 1, 0, 1],
                         count_include_pad=0),
        helper.make_node("AveragePool", ["m"], ["a2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         count_include_pad=1),
        helper.make_node("GlobalAveragePool", ["a"], ["g"]),
        helper.make_node("ReduceMean", ["a2", "axes"], ["r"], keepdims=1),
        helper.make_node("ReduceMean", ["a2", "axes0"], ["r0"], keepdims=0),
    ]
    model = make_model(nodes, [("x", [1, 3, 13, 12])], ["g", "r", "r0"],
                       {"axes": np.array([-1], np.int64), "axes0": np.array([1], np.int64)})
    check_vs_ref(model, {"x": rand(1, 3, 13, 12)})


def test_matmul_gemm_softmax_layernorm():
    inits = {"w": rand(16, 24, seed=1), "bias": rand(24, seed=2), "g": rand(24, seed=3),
             "beta": rand(24, seed=4), "wg": rand(10, 24, seed=5), "cg": rand(10, seed=6)}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),          # 3-D by constant 2-D
        helper.make_node("Add", ["m", "bias"], ["mb"]),
        helper.make_node("Div", ["mb", "sq2"], ["d"]),         # GELU, erf form
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["mb", "e1"], ["p"]),
        helper.make_node("Mul", ["p", "half"], ["gelu"]),
        helper.make_node("LayerNormalization", ["gelu", "g", "beta"], ["ln"], epsilon=1e-5),
        helper.make_node("Transpose", ["ln"], ["lt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["ln", "lt"], ["att"]),     # batched, both computed
        helper.make_node("Softmax", ["att"], ["sm"], axis=-1),
        helper.make_node("Reshape", ["ln", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wg", "cg"], ["gm"], transB=1, alpha=0.5),
    ]
    inits.update({"sq2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5),
                  "shape": np.array([-1, 24], np.int64)})
    model = make_model(nodes, [("x", [2, 5, 16])], ["sm", "gm"], inits)
    check_vs_ref(model, {"x": rand(2, 5, 16)}, 1e-5, 1e-5)


@pytest.mark.asan
def test_attention_matmuls_read_transposed_views_in_place():
    """Transposes are views on cpu; the batched MatMul reads them through
    their strides (rows or columns contiguous), broadcasting batch axes."""
    nodes = [helper.make_node("Reshape", ["x", "heads"], ["r"]),
             helper.make_node("Transpose", ["r"], ["q"], perm=[0, 2, 1, 3]),
             helper.make_node("Transpose", ["r"], ["kt"], perm=[0, 2, 3, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "q"], ["o"]),
             helper.make_node("Transpose", ["o"], ["t"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["t", "flat"], ["y"]),
             helper.make_node("MatMul", ["b", "kt"], ["z"])]  # (4, 1, 5, 6) x (1, 4, 6, 8)
    model = make_model(nodes, [("x", [1, 8, 24]), ("b", [4, 1, 5, 6])], ["y", "z"],
                       {"heads": np.array([1, 8, 4, 6], np.int64),
                        "flat": np.array([1, 8, 24], np.int64)})
    check_vs_ref(model, {"x": rand(1, 8, 24), "b": rand(4, 1, 5, 6, seed=1)})


def test_elementwise_chain_with_broadcasting_and_threads(monkeypatch):
    nodes = [helper.make_node("Mul", ["x", "s"], ["a"]),
             helper.make_node("Sigmoid", ["a"], ["b"]),
             helper.make_node("Sub", ["b", "y"], ["c"]),
             helper.make_node("Pow", ["c", "two"], ["d"]),
             helper.make_node("Sqrt", ["d"], ["e"]),
             helper.make_node("LeakyRelu", ["e"], ["f"], alpha=0.2)]
    model = make_model(nodes, [("x", [4, 64, 300]), ("y", [64, 1])], ["f"],
                       {"s": rand(300, seed=3), "two": np.float32(2)})
    feeds = {"x": rand(4, 64, 300), "y": rand(64, 1, seed=1)}
    results = []
    for threads in ("1", "2"):
        monkeypatch.setenv("HELI_NUM_THREADS", threads)
        results.append(heli.compile(model, "cpu").run(feeds)["f"])
    np.testing.assert_array_equal(results[0], results[1])
    check_vs_ref(model, feeds, 1e-6, 1e-6)


def test_feeds_are_not_modified():
    model = make_model([helper.make_node("Gemm", ["a", "b", "c"], ["y"], beta=0.5)],
                       [("a", [3, 5]), ("b", [5, 4]), ("c", [3, 4])], ["y"])
    feeds = {"a": rand(3, 5), "b": rand(5, 4, seed=1), "c": rand(3, 4, seed=2)}
    before = {k: v.copy() for k, v in feeds.items()}
    check_vs_ref(model, feeds)
    for k, v in feeds.items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.asan
def test_arena_keeps_views_alive_and_outputs_apart():
    """Intermediate tensors share one preallocated arena: a view made by a
    host step (Reshape, Transpose) keeps its buffer alive, and what a run
    returns, a view of a kernel's result included, survives the next run."""
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Reshape", ["a", "flat"], ["v"]),  # a view of `a`
             helper.make_node("Softmax", ["x"], ["d"]),  # may take a dead buffer's place
             helper.make_node("Reshape", ["v", "shape"], ["w"]),
             helper.make_node("Add", ["w", "d"], ["y"]),
             helper.make_node("Exp", ["x"], ["e"]),
             helper.make_node("Reshape", ["e", "flat"], ["z"])]  # an output that is a view
    model = make_model(nodes, [("x", [16, 24])], ["y", "z"],
                       {"flat": np.array([-1], np.int64), "shape": np.array([16, 24], np.int64)})
    compiled = check_vs_ref(model, {"x": rand(16, 24)})
    first = compiled.run({"x": rand(16, 24)})
    kept = {k: v.copy() for k, v in first.items()}
    second = compiled.run({"x": rand(16, 24, seed=1)})
    for name, value in kept.items():
        np.testing.assert_array_equal(first[name], value)
        assert not np.array_equal(second[name], value)
    want = heli.compile(model, "ref").run({"x": rand(16, 24, seed=1)})
    for name, value in want.items():
        assert_close(second[name], value, 1e-5, 1e-5, what=name)


# ---------------------------------------------------------------- real models

def _check_model(path, feeds):
    want = run_onnxruntime(str(path), feeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        model = heli.compile(str(path), "cpu", input_shapes={k: v.shape for k, v in feeds.items()})
        got = model.run(feeds)
    for name, value in want.items():
        assert_close(got[name], value, RTOL, ATOL, what=name)
    placement = next(iter(model.specializations.values())).placement
    on_cpu = sum(len(nodes) for t, nodes in placement.segments if t == "cpu")
    total = sum(len(nodes) for _, nodes in placement.segments)
    return on_cpu, total


def _tokens(length=100, seq=128, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.zeros((1, seq), np.int64)
    ids[0, :length] = rng.integers(1000, 30000, length)
    return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)}


@pytest.mark.slow
@pytest.mark.asan
def test_resnet18_matches_onnxruntime():
    from heli.testing import resnet18_onnx

    on_cpu, total = _check_model(resnet18_onnx(), {"input": rand(1, 3, 224, 224)})
    assert on_cpu == total


@pytest.mark.slow
@pytest.mark.asan
def test_minilm_matches_onnxruntime():
    from heli.testing import minilm_onnx

    feeds = _tokens()
    feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    on_cpu, total = _check_model(minilm_onnx(), feeds)
    assert on_cpu > 0.9 * total


@pytest.mark.slow
@pytest.mark.asan
def test_ppocr_det_matches_onnxruntime():
    from heli.testing import ppocr_model

    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 160, 160)).astype(np.float32)
    on_cpu, total = _check_model(ppocr_model("det"), {"x": x})
    assert on_cpu == total


@pytest.mark.slow
@pytest.mark.asan
def test_ppocr_rec_matches_onnxruntime():
    from heli.testing import ocr_input, ppocr_model, render_text

    on_cpu, total = _check_model(ppocr_model("rec"), {"x": ocr_input(render_text("Heli 2026"))})
    assert on_cpu > 0.9 * total


# ------------------------------------------------------------ conformance

@pytest.mark.slow
def test_node_cases_of_claimed_ops_pass():
    """`heli conformance --target cpu`: a case either passes or is refused
    (some node unsupported); none fails."""
    from heli.conformance import case_op, heli_runner, node_cases, run_case
    from heli.targets.cpu import _capabilities

    claimed = set(_capabilities())
    runner = heli_runner("cpu")
    results = [run_case(c, runner) for c in node_cases() if case_op(c) in claimed]
    failed = [f"{r.name}: {r.detail}" for r in results if r.status == "fail"]
    assert not failed, "\n".join(failed[:20])
    assert sum(r.status == "pass" for r in results) >= 200
