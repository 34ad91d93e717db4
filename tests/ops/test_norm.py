"""Normalizations, the softmax family and the losses: type inference, error
messages and numbers against float64 oracles and ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import heli
from heli._errors import ExecutionError, ShapeError
from heli.ir._types import DType, TensorType
from tests.conftest import run_onnxruntime
from tests.ops.helpers import infer_types as infer

F32 = DType.FLOAT32
RNG = np.random.default_rng(0)


def model(op_name, feeds, outputs=("y",), attrs=None, opset=17, initializers=None):
    """A one-node ONNX model; ``initializers`` (name -> array) become constants."""
    initializers = initializers or {}
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype),
                                            a.shape) for name, a in feeds.items()]
    names = [n for n in [*feeds, *initializers]]
    node = helper.make_node(op_name, names, list(outputs), **(attrs or {}))
    graph = helper.make_graph(
        [node], "g", inputs,
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs if o],
        [numpy_helper.from_array(a, n) for n, a in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def run(m, feeds):
    result = heli.compile(m, debug=True).run(feeds)
    return [result[o.name] for o in m.graph.output]


def compare_with_ort(m, feeds):
    want = run_onnxruntime(m, feeds)
    for got, o in zip(run(m, feeds), m.graph.output, strict=True):
        np.testing.assert_allclose(got, want[o.name], rtol=1e-4, atol=1e-5, err_msg=o.name)


def moments(x, axes):
    x = x.astype(np.float64)
    return x.mean(axes, keepdims=True), x.var(axes, keepdims=True)


# --------------------------------------------------------------------------- LayerNormalization


def test_layernorm_infer_symbolic_stats():
    x = TensorType(F32, ("batch", "seq", 768))
    w = TensorType(F32, (768,))
    y, mean, inv = infer("LayerNormalization", [x, w, w], {"axis": -1}, num_outputs=3)
    assert y == x
    assert mean == inv == TensorType(F32, ("batch", "seq", 1))
    _, mean = infer("LayerNormalization", [x, w], {"axis": 1}, num_outputs=2)
    assert mean.shape == ("batch", 1, 1)


def test_layernorm_infer_bad_axis():
    x = TensorType(F32, (2, 3))
    with pytest.raises(ShapeError, match="axis 2 is out of range"):
        infer("LayerNormalization", [x, TensorType(F32, (3,))], {"axis": 2})


def test_layernorm_bert_like_matches_ort_and_float64():
    # Hidden states with a large offset: a naive float32 E[x^2] - E[x]^2 would lose digits.
    x = (RNG.standard_normal((2, 64, 384)) * 4 + 20).astype(np.float32)
    w = RNG.standard_normal(384).astype(np.float32)
    b = RNG.standard_normal(384).astype(np.float32)
    m = model("LayerNormalization", {"x": x}, ("y", "mean", "inv_std"),
              {"axis": -1, "epsilon": 1e-12}, initializers={"w": w, "b": b})
    compare_with_ort(m, {"x": x})
    y, mean, inv_std = run(m, {"x": x})
    mu, var = moments(x, -1)
    np.testing.assert_allclose(mean, mu, rtol=1e-6)
    np.testing.assert_allclose(inv_std, 1 / np.sqrt(var + 1e-12), rtol=1e-6)
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + 1e-12) * w + b, rtol=1e-5, atol=1e-5)


def test_rmsnorm_matches_float64():
    x = RNG.standard_normal((3, 4, 8)).astype(np.float32)
    w = RNG.standard_normal((4, 8)).astype(np.float32)
    m = model("RMSNormalization", {"x": x, "w": w}, attrs={"axis": 1}, opset=23)
    (y,) = run(m, {"x": x, "w": w})
    x64 = x.astype(np.float64)
    want = x64 / np.sqrt((x64 ** 2).mean((1, 2), keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- softmax family


def test_softmax_attention_scores_match_ort():
    scores = (RNG.standard_normal((2, 4, 32, 32)) * 10).astype(np.float32)
    scores[..., 20:] = -1e9  # an additive attention mask
    for op_name in ("Softmax", "LogSoftmax"):
        compare_with_ort(model(op_name, {"x": scores}, opset=13), {"x": scores})


def test_softmax_large_and_infinite_inputs():
    x = np.array([[1e4, 1e4 - 1, -np.inf], [-np.inf, 0.0, -np.inf]], np.float32)
    (y,) = run(model("Softmax", {"x": x}, opset=13), {"x": x})
    e = np.exp(-1.0)
    np.testing.assert_allclose(y, [[1 / (1 + e), e / (1 + e), 0], [0, 1, 0]], rtol=1e-6)


def test_hardmax_picks_first_maximum():
    x = np.array([[3.0, 1.0, 3.0], [0.0, 2.0, 1.0]], np.float32)
    (y,) = run(model("Hardmax", {"x": x}, attrs={"axis": 0}, opset=13), {"x": x})
    np.testing.assert_array_equal(y, [[1, 0, 1], [0, 1, 0]])


# --------------------------------------------------------------------------- other norms


def test_batchnorm_inference_and_training():
    x = RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)
    s, b, mu, var = (RNG.standard_normal(3).astype(np.float32) for _ in range(4))
    var = np.abs(var) + 0.5
    inits = {"s": s, "b": b, "m": mu, "v": var}
    shape = (1, 3, 1, 1)
    (y,) = run(model("BatchNormalization", {"x": x}, opset=15, initializers=inits), {"x": x})
    want = (x - mu.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-5) * s.reshape(shape)
    np.testing.assert_allclose(y, want + b.reshape(shape), rtol=1e-5, atol=1e-5)

    m = model("BatchNormalization", {"x": x}, ("y", "rm", "rv"),
              {"training_mode": 1, "momentum": 0.8}, opset=15, initializers=inits)
    y, running_mean, running_var = run(m, {"x": x})
    bm, bv = moments(x, (0, 2, 3))
    np.testing.assert_allclose(running_mean, mu * 0.8 + bm.reshape(-1) * 0.2, rtol=1e-5)
    np.testing.assert_allclose(running_var, var * 0.8 + bv.reshape(-1) * 0.2, rtol=1e-5)
    want = (x - bm) / np.sqrt(bv + 1e-5) * s.reshape(shape) + b.reshape(shape)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_batchnorm_infer_rejects_wrong_channel_count():
    x, p = TensorType(F32, ("n", 3, 8, 8)), TensorType(F32, (4,))
    with pytest.raises(ShapeError, match=r"input 1 has shape \[4\]; expected \[3\]"):
        infer("BatchNormalization", [x, p, p, p, p])


def test_instance_and_group_norm_match_ort():
    x = (RNG.standard_normal((2, 8, 6, 6)) * 2 + 3).astype(np.float32)
    s, b = RNG.standard_normal(8).astype(np.float32), RNG.standard_normal(8).astype(np.float32)
    compare_with_ort(model("InstanceNormalization", {"x": x}, opset=22,
                           initializers={"s": s, "b": b}), {"x": x})
    m = model("GroupNormalization", {"x": x}, attrs={"num_groups": 4}, opset=21,
              initializers={"s": s, "b": b})
    (y,) = run(m, {"x": x})
    mu, var = moments(x.reshape(2, 4, -1), 2)
    norm = ((x.reshape(2, 4, -1) - mu) / np.sqrt(var + 1e-5)).reshape(x.shape)
    np.testing.assert_allclose(y, norm * s.reshape(8, 1, 1) + b.reshape(8, 1, 1),
                               rtol=1e-5, atol=1e-5)


def test_groupnorm_opset18_per_group_scale_is_upgraded():
    x = RNG.standard_normal((1, 6, 2, 2)).astype(np.float32)
    s, b = np.array([1.0, 2.0, 3.0], np.float32), np.array([0.0, 1.0, -1.0], np.float32)
    m = model("GroupNormalization", {"x": x, "s": s, "b": b}, attrs={"num_groups": 3},
              opset=18)
    (y,) = run(m, {"x": x, "s": s, "b": b})
    mu, var = moments(x.reshape(1, 3, -1), 2)
    norm = ((x.reshape(1, 3, -1) - mu) / np.sqrt(var + 1e-5)).reshape(x.shape)
    want = norm * np.repeat(s, 2).reshape(6, 1, 1) + np.repeat(b, 2).reshape(6, 1, 1)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_groupnorm_infer_indivisible_channels():
    x, p = TensorType(F32, ("n", 6, 4)), TensorType(F32, (6,))
    with pytest.raises(ShapeError, match="6 channels cannot be split into 4 groups"):
        infer("GroupNormalization", [x, p, p], {"num_groups": 4})


def test_lrn_even_size_window():
    # size 2: window [c, c+1] (floor((size-1)/2) = 0 before, ceil(...) = 1 after).
    x = np.array([1.0, 2.0, 3.0], np.float32).reshape(1, 3, 1, 1)
    (y,) = run(model("LRN", {"x": x}, attrs={"size": 2, "alpha": 0.5, "beta": 1.0,
                                              "bias": 1.0}, opset=13), {"x": x})
    sums = np.array([1 + 4, 4 + 9, 9])
    np.testing.assert_allclose(y.reshape(-1), [1, 2, 3] / (1 + 0.25 * sums), rtol=1e-6)


def test_mvn_and_lpnorm_match_ort():
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    x[1, :, 0, 0] = 0  # a zero vector: LpNormalization gives 0 there, like ORT
    compare_with_ort(model("MeanVarianceNormalization", {"x": x}, opset=13), {"x": x})
    for p in (1, 2):
        compare_with_ort(model("LpNormalization", {"x": x}, attrs={"axis": 1, "p": p},
                               opset=22), {"x": x})


# --------------------------------------------------------------------------- losses


def test_nll_loss_weighted_mean_with_ignore_index():
    log_prob = np.log(np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]], np.float32))
    target = np.array([1, -1, 0], np.int64)
    weight = np.array([2.0, 3.0], np.float32)
    m = model("NegativeLogLikelihoodLoss", {"x": log_prob, "t": target, "w": weight},
              attrs={"ignore_index": -1}, opset=22)
    (y,) = run(m, {"x": log_prob, "t": target, "w": weight})
    want = -(3 * np.log(0.8) + 2 * np.log(0.5)) / (3 + 2)
    assert y.shape == () and y.dtype == np.float32
    np.testing.assert_allclose(y, want, rtol=1e-6)


def test_nll_loss_target_out_of_range():
    x, t = np.zeros((2, 3), np.float32), np.array([0, 3], np.int64)
    m = model("NegativeLogLikelihoodLoss", {"x": x, "t": t}, opset=22)
    with pytest.raises(ExecutionError, match="target class 3 is out of range for 3 classes"):
        run(m, {"x": x, "t": t})


def test_loss_infer():
    scores, labels = TensorType(F32, ("n", 5, "d")), TensorType(DType.INT64, ("n", "d"))
    loss, log_prob = infer("SoftmaxCrossEntropyLoss", [scores, labels],
                           {"reduction": "none"}, num_outputs=2)
    assert loss == TensorType(F32, ("n", "d")) and log_prob == scores
    assert infer("SoftmaxCrossEntropyLoss", [scores, labels]) == [TensorType(F32, ())]
    with pytest.raises(ShapeError, match="reduction 'avg' is not one of"):
        infer("NegativeLogLikelihoodLoss", [scores, labels], {"reduction": "avg"})


def test_softmax_cross_entropy_matches_ort():
    scores = RNG.standard_normal((3, 5, 4)).astype(np.float32)
    labels = RNG.integers(0, 5, (3, 4)).astype(np.int64)
    labels[0, 0] = -100
    m = model("SoftmaxCrossEntropyLoss", {"x": scores, "l": labels}, ("loss", "log_prob"),
              {"ignore_index": -100}, opset=13)
    compare_with_ort(m, {"x": scores, "l": labels})
