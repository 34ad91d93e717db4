"""QdqToInt on the other forms of ONNX Runtime's quantizer: uint8 QDQ (an
exact shift to int8), QOperator QLinearConv / QLinearMatMul, and the layers it
must leave in float with a reason.  The oracle is the reference executor
running the original quantized graph."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import heli
from heli.frontend.onnx import import_onnx
from heli.passes import QdqToInt
from heli.passes._qdq_to_int import _uint8_to_int8
from heli.targets.ref import GraphRunner

R = np.random.default_rng(7)
W = R.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
W_SCALE = (R.uniform(0.5, 2.0, 4) * 0.01).astype(np.float32)
BIAS = R.integers(-300, 300, 4).astype(np.int32)


def _model(nodes, inits, out_type=TensorProto.FLOAT, x_type=TensorProto.FLOAT,
           out_shape=(1, 4, 6, 6)):
    graph = helper.make_graph(
        nodes, "q", [helper.make_tensor_value_info("x", x_type, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", out_type, list(out_shape))],
        [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _qdq_conv(act: np.dtype, zx: int, zy: int, w=W, w_zp=None):
    """Q(x) → DQ → Conv (DQ weights, DQ int32 bias) → Q → DQ, activations of
    type ``act``."""
    inits = {"sx": np.float32(0.02), "zx": np.array(zx, act), "w": w, "sw": W_SCALE,
             "zw": np.zeros(4, w.dtype) if w_zp is None else w_zp, "b": BIAS,
             "sb": (np.float32(0.02) * W_SCALE).astype(np.float32), "zb": np.zeros(4, np.int32),
             "sy": np.float32(0.05), "zy": np.array(zy, act)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wf"], axis=0),
             helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["bf"], axis=0),
             helper.make_node("Conv", ["xf", "wf", "bf"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "sy", "zy"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
    return _model(nodes, inits)


def _feeds(seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).uniform(-2, 2, (1, 3, 6, 6)).astype(np.float32)}


def _run(graph, feeds) -> np.ndarray:
    return GraphRunner(graph).run(feeds)[0]


def test_uint8_qdq_becomes_int8_exactly():
    graph = _qdq_conv(np.uint8, 140, 30)
    shifted = _uint8_to_int8(graph)
    types = {v.name: v.type.dtype.name for n in shifted.nodes for v in n.outputs}
    assert types["xq"] == types["yq"] == "INT8"
    for seed in range(5):
        np.testing.assert_array_equal(_run(shifted, _feeds(seed)), _run(graph, _feeds(seed)))


def _fused_within_one_lsb(graph, lsb: float):
    """``graph`` after QdqToInt, checked against the graph as written on five
    inputs: the outputs at most one output LSB apart."""
    fused = QdqToInt().apply(graph)
    for seed in range(5):
        got, want = _run(fused, _feeds(seed)), _run(graph, _feeds(seed))
        assert np.abs(got - want).max() <= lsb * 1.0001
    return [n.op.qualname for n in fused.nodes]


@pytest.mark.parametrize("act", [np.int8, np.uint8])
def test_qdq_conv_fuses_and_stays_within_one_lsb(act):
    zx, zy = (12, -5) if act == np.int8 else (140, 123)
    ops = _fused_within_one_lsb(_qdq_conv(act, zx, zy), 0.05)      # y_scale
    assert ops.count("heli:QConv") == 1


def test_uint8_weights_need_zero_point_128():
    """uint8 weights with zero point 128 are symmetric int8 once shifted;
    any other zero point is asymmetric: left float, with the reason."""
    w = (W.astype(np.int16) + 128).astype(np.uint8)
    fused = QdqToInt().apply(_qdq_conv(np.uint8, 140, 30, w, np.full(4, 128, np.uint8)))
    assert "heli:QConv" in [n.op.qualname for n in fused.nodes]
    graph = _qdq_conv(np.uint8, 140, 30, w, np.full(4, 120, np.uint8))
    with pytest.warns(heli.FallbackWarning, match=r"'c'.*asymmetric.*zero point 0"):
        kept = QdqToInt().apply(graph)
    assert "Conv" in [n.op.qualname for n in kept.nodes]
    np.testing.assert_array_equal(_run(kept, _feeds(0)), _run(graph, _feeds(0)))


def test_qlinear_conv_becomes_an_integer_conv():
    inits = {"sx": np.float32(0.02), "zx": np.int8(3), "w": W, "sw": W_SCALE,
             "zw": np.zeros(4, np.int8), "sy": np.float32(0.05), "zy": np.int8(-2), "b": BIAS}
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("QLinearConv", ["xq", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"],
                              ["yq"], pads=[1, 1, 1, 1]),
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
    ops = _fused_within_one_lsb(_model(nodes, inits), 0.05)
    assert "heli:QConv" in ops and "QLinearConv" not in ops


def test_qlinear_matmul_becomes_an_integer_matmul():
    b = R.integers(-127, 128, (6, 5)).astype(np.int8)
    inits = {"sx": np.float32(0.02), "zx": np.uint8(128), "b": b,
             "sb": np.float32(0.01), "zb": np.int8(0), "sy": np.float32(0.04),
             "zy": np.uint8(120)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("QLinearMatMul", ["xq", "sx", "zx", "b", "sb", "zb", "sy", "zy"],
                              ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
    ops = _fused_within_one_lsb(_model(nodes, inits, out_shape=(1, 3, 6, 5)), 0.04)
    assert "heli:QMatMul" in ops and "QLinearMatMul" not in ops


def test_a_second_application_changes_nothing():
    """The npu target applies the pass again to a graph already fused."""
    fused = QdqToInt().apply(_qdq_conv(np.uint8, 140, 30))
    again = QdqToInt().apply(fused)
    assert [(n.op.qualname, n.attrs) for n in again.nodes] == \
        [(n.op.qualname, n.attrs) for n in fused.nodes]
