"""int8 QDQ post-training quantization of a small CNN."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import heli
from heli.quant import (
    MinMaxCalibrator,
    PercentileCalibrator,
    activation_qparams,
    calibrate,
    quantize,
    to_qdq_onnx,
    weight_qparams,
)
from tests._ort import REDUCE_RANGE
from tests.quant._models import images, small_cnn


@pytest.fixture(scope="module")
def model():
    return small_cnn()


@pytest.fixture(scope="module")
def data():
    return images(48)


@pytest.fixture(scope="module")
def qgraph(model, data):
    # 7-bit weights where ONNX Runtime's int8 kernels saturate (tests/_ort.py)
    return quantize(model, [{"x": x} for x in data[:32]], reduce_range=REDUCE_RANGE)


def _session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def test_ref_and_onnxruntime_agree(qgraph, data):
    session = _session(to_qdq_onnx(qgraph))
    compiled = heli.compile(qgraph)
    for x in data[32:]:
        ours = compiled.run({"x": x})["y"]
        theirs = session.run(None, {"x": x})[0]
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_quantized_outputs_close_to_float(model, qgraph, data):
    float_session = _session(model)
    compiled = heli.compile(qgraph)
    same_top1 = 0
    for x in data[32:]:
        q = compiled.run({"x": x})["y"].ravel()
        f = float_session.run(None, {"x": x})[0].ravel()
        cosine = float(q @ f / (np.linalg.norm(q) * np.linalg.norm(f)))
        assert cosine > 0.99
        same_top1 += int(q.argmax() == f.argmax())
    assert same_top1 >= len(data[32:]) - 1


def test_weights_per_channel_and_bias_int32(qgraph):
    dq = {n.outputs[0].name: n for n in qgraph.nodes if n.op.name == "DequantizeLinear"}
    ops = [n for n in qgraph.nodes if n.op.name in ("Conv", "Gemm")]
    assert [n.op.name for n in ops] == ["Conv", "Conv", "Gemm"]
    for node, channels in zip(ops, (8, 16, 10), strict=True):
        x_dq, w_dq, b_dq = (dq[v.name] for v in node.inputs)
        w_q, w_scale, w_zp = (qgraph.constants[v.name] for v in w_dq.inputs)
        assert w_q.dtype == np.int8 and w_zp.dtype == np.int8 and not w_zp.any()
        assert w_scale.shape == (channels,) and w_dq.attrs["axis"] == 0  # Gemm: transB=1
        peak = 63 if REDUCE_RANGE else 127
        assert np.abs(w_q).max(axis=tuple(range(1, w_q.ndim))).tolist() == [peak] * channels
        b_q, b_scale, _ = (qgraph.constants[v.name] for v in b_dq.inputs)
        x_scale = qgraph.constants[x_dq.inputs[1].name]
        assert b_q.dtype == np.int32
        np.testing.assert_array_equal(b_scale, (x_scale * w_scale).astype(np.float32))


def test_matmul_weight_axis_is_output_channel():
    w = np.array([[1.0, -4.0, 0.5], [2.0, 1.0, -0.25]], np.float32)  # (K=2, N=3)
    params = weight_qparams(w, axis=1)
    np.testing.assert_allclose(params.scale, np.array([2, 4, 0.5], np.float32) / 127)


def test_activation_qparams():
    p = activation_qparams(0.0, 2.55)  # one-sided (after ReLU): all 256 levels used
    assert float(p.scale) == pytest.approx(0.01) and int(p.zero_point) == -128
    p = activation_qparams(0.5, 1.0)  # widened to include 0
    assert float(p.scale) == pytest.approx(1.0 / 255) and int(p.zero_point) == -128
    p = activation_qparams(-1.0, 3.0, symmetric=True)
    assert float(p.scale) == pytest.approx(3.0 / 127) and int(p.zero_point) == 0


def test_percentile_ignores_an_outlier(model, data):
    samples = [{"x": x.copy()} for x in data[:16]]
    samples[3]["x"][0, 1, 5, 5] = 1000.0  # one outlier pixel
    from heli.frontend.onnx import import_onnx

    graph = import_onnx(model)
    minmax = calibrate(graph, samples, MinMaxCalibrator())
    percentile = calibrate(graph, samples, PercentileCalibrator(99.99))
    assert minmax["x"][1] == 1000.0
    assert percentile["x"][1] < 3.0  # the smooth inputs lie in about [-2, 2]
    assert percentile["x"][0] == pytest.approx(minmax["x"][0], abs=0.5)
    q_minmax = quantize(graph, samples, calibrator="minmax")
    q_pct = quantize(graph, samples, calibrator="percentile")
    assert q_pct.constants["x_scale"] < q_minmax.constants["x_scale"] / 100


@pytest.mark.parametrize("reduce_range, peak", [(False, 127), (True, 63)])
def test_reduce_range_quantizes_weights_to_7_bits(model, data, reduce_range, peak):
    q = quantize(model, [{"x": x} for x in data[:8]], reduce_range=reduce_range)
    weights = [q.constants[n.inputs[0].name] for n in q.nodes
               if n.op.name == "DequantizeLinear" and n.inputs[0].name in q.constants
               and q.constants[n.inputs[0].name].dtype == np.int8
               and q.constants[n.inputs[0].name].ndim >= 2]
    assert len(weights) == 3
    assert [int(np.abs(w).max()) for w in weights] == [peak] * 3


@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
def test_matmul_and_gemm_weights_quantized_along_n(op):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "w")
    node = helper.make_node(op, ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node], "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    xs = rng.normal(size=(8, 2, 4)).astype(np.float32)
    q = quantize(model, [{"x": x} for x in xs], reduce_range=REDUCE_RANGE)
    (w_dq,) = [n for n in q.nodes if n.op.name == "DequantizeLinear" and n.attrs.get("axis") == 1]
    assert q.constants[w_dq.inputs[1].name].shape == (6,)
    session = _session(to_qdq_onnx(q))
    np.testing.assert_allclose(heli.compile(q).run({"x": xs[0]})["y"],
                               session.run(None, {"x": xs[0]})[0], rtol=1e-5, atol=1e-5)
