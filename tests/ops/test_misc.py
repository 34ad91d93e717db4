"""ai.onnx.ml ops, random numbers, NonMaxSuppression, RoiAlign, Det,
ImageDecoder and the training optimizers: inference, errors and values
against hand-computed or float64 oracles."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import heli
from heli._errors import ExecutionError, ShapeError, UnsupportedError
from heli.ir._ops import get_op
from heli.ir._types import DType, TensorType
from tests.ops.helpers import infer_types as infer

F32 = DType.FLOAT32
ML = "ai.onnx.ml"
TRAINING = "ai.onnx.preview.training"


def run(op_name, feeds, attrs=None, domain="", opset=22, outputs=1):
    """One node; ``feeds`` in input order (None for an omitted optional)."""
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(feeds)]
    given = {n: v for n, v in zip(names, feeds, strict=True) if v is not None}
    inputs = [helper.make_tensor_value_info(
        n, TensorProto.STRING if v.dtype == object else helper.np_dtype_to_tensor_dtype(v.dtype),
        v.shape) for n, v in given.items()]
    out_names = [f"y{k}" for k in range(outputs)]
    node = helper.make_node(op_name, names, out_names, domain=domain, **(attrs or {}))
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_empty_tensor_value_info(o) for o in out_names])
    opsets = [helper.make_opsetid("", opset)]
    if domain:
        opsets.append(helper.make_opsetid(domain, {ML: 5, TRAINING: 1}[domain]))
    model = helper.make_model(graph, opset_imports=opsets)
    result = heli.compile(model, debug=True).run(given)
    values = [result[o] for o in out_names]
    return values[0] if outputs == 1 else values


def strings(*values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


# == ai.onnx.ml =========================================================================


def test_label_encoder_nan_key_and_last_repeat_wins():
    x = np.array([[1.0, np.nan], [2.0, 7.0]], np.float32)
    attrs = {"keys_floats": [1.0, float("nan"), 2.0, 1.0], "values_int64s": [10, 20, 30, 40],
             "default_int64": -7}
    y = run("LabelEncoder", [x], attrs, domain=ML)
    assert y.dtype == np.int64 and y.tolist() == [[40, 20], [30, -7]]


def test_label_encoder_tensor_values_and_opset1_form():
    keys = numpy_helper.from_array(np.array([3, 1], np.int64), "k")
    values = numpy_helper.from_array(strings("three", "one"), "v")
    y = run("LabelEncoder", [np.array([1, 2, 3], np.int64)],
            {"keys_tensor": keys, "values_tensor": values}, domain=ML)
    assert y.tolist() == ["one", "_Unused", "three"]
    y = run("LabelEncoder", [strings("b", "z")], {"classes_strings": ["a", "b"]}, domain=ML)
    assert y.tolist() == [1, -1]


def test_label_encoder_infer():
    (t,) = infer("LabelEncoder", [TensorType(DType.STRING, ("n",))],
                 {"keys_strings": ("a",), "values_floats": (1.0,)}, domain=ML)
    assert t == TensorType(F32, ("n",))
    with pytest.raises(ShapeError, match="the input is float32 but the keys are strings"):
        infer("LabelEncoder", [TensorType(F32, (2,))],
              {"keys_strings": ("a",), "values_floats": (1.0,)}, domain=ML)
    with pytest.raises(ShapeError, match="exactly one keys_"):
        infer("LabelEncoder", [TensorType(F32, (2,))], {"values_floats": (1.0,)}, domain=ML)


def test_array_feature_extractor():
    x = np.arange(6, dtype=np.float32)
    y = run("ArrayFeatureExtractor", [x, np.array([4, 0], np.int64)], domain=ML)
    assert y.tolist() == [[4.0, 0.0]]  # a 1-D input gives one row
    (t,) = infer("ArrayFeatureExtractor", [TensorType(F32, ("n", 6)),
                                           TensorType(DType.INT64, (3,))], domain=ML)
    assert t == TensorType(F32, ("n", 3))
    with pytest.raises(ExecutionError, match="index 6 is out of range"):
        run("ArrayFeatureExtractor", [x, np.array([6], np.int64)], domain=ML)


def test_binarizer():
    y = run("Binarizer", [np.array([-1.0, 0.5, 0.7, np.nan], np.float32)],
            {"threshold": 0.5}, domain=ML)
    assert y.tolist() == [0.0, 0.0, 1.0, 0.0]


def tree_attrs(proto=True, **extra):
    # One tree: x0 <= 1 ? leaf0 (target 0, 1.0) : (x1 < 0 ? leaf1 (t1, 2.0) : leaf2 (t0, 5.0));
    # a second tree that is a single leaf (target 1, 4.0).
    attrs = dict(
        n_targets=3, tree_roots=[0, 2],
        nodes_modes=numpy_helper.from_array(np.array([0, 1, 0], np.uint8), "m"),
        nodes_featureids=[0, 1, 0],
        nodes_splits=numpy_helper.from_array(np.array([1.0, 0.0, 0.0], np.float32), "s"),
        nodes_truenodeids=[0, 1, 3], nodes_trueleafs=[1, 1, 1],
        nodes_falsenodeids=[1, 2, 3], nodes_falseleafs=[0, 1, 1],
        nodes_missing_value_tracks_true=[1, 0, 0],
        leaf_targetids=[0, 1, 0, 1],
        leaf_weights=numpy_helper.from_array(np.array([1.0, 2.0, 5.0, 4.0], np.float32), "w"),
    )
    attrs.update(extra)
    if not proto:  # what the importer hands over: arrays, not TensorProtos
        attrs = {k: numpy_helper.to_array(v) if hasattr(v, "dims") else v
                 for k, v in attrs.items()}
    return attrs


def test_tree_ensemble_aggregates():
    x = np.array([[0.0, 0.0], [3.0, -1.0], [3.0, 1.0], [np.nan, 1.0]], np.float32)
    total = run("TreeEnsemble", [x], tree_attrs(), domain=ML)
    # NaN tracks true at the root: row 3 takes leaf 0.
    assert total.tolist() == [[1, 4, 0], [0, 6, 0], [5, 4, 0], [1, 4, 0]]
    mean = run("TreeEnsemble", [x], tree_attrs(aggregate_function=0), domain=ML)
    np.testing.assert_allclose(mean, total / 2)
    low = run("TreeEnsemble", [x], tree_attrs(aggregate_function=2), domain=ML)
    assert low.tolist() == [[1, 4, 0], [0, 2, 0], [5, 4, 0], [1, 4, 0]]
    soft = run("TreeEnsemble", [x], tree_attrs(post_transform=1), domain=ML)
    e = np.exp(total - total.max(axis=1, keepdims=True))
    np.testing.assert_allclose(soft, e / e.sum(axis=1, keepdims=True), rtol=1e-6)
    probit = run("TreeEnsemble", [np.zeros((1, 2), np.float32)],
                 tree_attrs(leaf_weights=numpy_helper.from_array(
                     np.array([0.975, 0, 0, 0.5], np.float32), "w"), post_transform=4), domain=ML)
    # The normal quantile: probit(0.975) = 1.96, probit(0.5) = 0, probit(0) = -inf.
    np.testing.assert_allclose(probit, [[1.959964, 0.0, -np.inf]], atol=1e-5)


def test_tree_ensemble_infer_and_cycle():
    (t,) = infer("TreeEnsemble", [TensorType(F32, ("n", 2))], tree_attrs(False), domain=ML)
    assert t == TensorType(F32, ("n", 3))
    with pytest.raises(ShapeError, match="nodes_truenodeids has 2 entries"):
        infer("TreeEnsemble", [TensorType(F32, ("n", 2))],
              tree_attrs(False, nodes_truenodeids=[0, 1]), domain=ML)
    looping = tree_attrs(nodes_trueleafs=[0, 1, 1], nodes_truenodeids=[0, 1, 3])
    with pytest.raises(ExecutionError, match="cycle"):
        run("TreeEnsemble", [np.zeros((1, 2), np.float32)], looping, domain=ML)


# == random numbers ======================================================================


def test_random_ops_are_not_deterministic_but_seeds_reproduce():
    for name in ("RandomUniform", "RandomNormal", "RandomUniformLike", "RandomNormalLike",
                 "Bernoulli", "Multinomial"):
        assert not get_op(name).deterministic
    attrs = {"shape": [3, 4], "seed": 5.0, "low": 2.0, "high": 3.0, "dtype": 11}
    a, b = run("RandomUniform", [], attrs), run("RandomUniform", [], attrs)
    assert a.dtype == np.float64 and a.shape == (3, 4) and np.array_equal(a, b)
    assert ((a >= 2) & (a < 3)).all()
    c = run("RandomUniform", [], dict(attrs, seed=6.0))
    assert not np.array_equal(a, c)
    like = run("RandomNormalLike", [np.zeros((2, 5), np.float16)], {"seed": 1.0})
    assert like.dtype == np.float16 and like.shape == (2, 5)


def test_bernoulli_and_multinomial_degenerate_cases():
    p = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    y = run("Bernoulli", [p], {"dtype": TensorProto.INT64})
    assert y.dtype == np.int64 and y.tolist() == [[0, 1], [1, 0]]
    logits = np.array([[0.0, -np.inf, -np.inf], [-np.inf, -np.inf, 0.0]], np.float32)
    y = run("Multinomial", [logits], {"sample_size": 5, "seed": 3.0})
    assert y.dtype == np.int32 and y.tolist() == [[0] * 5, [2] * 5]


def test_multinomial_frequencies():
    logits = np.log(np.array([[0.2, 0.3, 0.5]], np.float32))
    y = run("Multinomial", [logits], {"sample_size": 20000, "seed": 0.0, "dtype": 7})
    freq = np.bincount(y[0], minlength=3) / 20000
    np.testing.assert_allclose(freq, [0.2, 0.3, 0.5], atol=0.02)
    (t,) = infer("Multinomial", [TensorType(F32, ("b", 3))], {"sample_size": 4})
    assert t == TensorType(DType.INT32, ("b", 4))


# == object detection ======================================================================


BOXES = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 2, 1, 3], [1, 1, 0, 0]]], np.float32)


def test_nms_orders_and_suppresses():
    scores = np.array([[[0.9, 0.8, 0.7, 0.6], [0.1, 0.2, 0.3, 0.4]]], np.float32)
    y = run("NonMaxSuppression", [BOXES, scores, np.array([10], np.int64),
                                  np.array([0.5], np.float32), np.array([0.25], np.float32)],
            opset=11)
    # Class 0: box 1 overlaps box 0 (IoU 0.82), box 3 is box 0 flipped (IoU 1).
    # Class 1: scores above 0.25 only: boxes 3 and 2.
    assert y.tolist() == [[0, 0, 0], [0, 0, 2], [0, 1, 3], [0, 1, 2]]


def test_nms_defaults_and_errors():
    scores = np.ones((1, 1, 4), np.float32)
    y = run("NonMaxSuppression", [BOXES, scores], opset=11)
    assert y.shape == (0, 3) and y.dtype == np.int64  # max_output_boxes_per_class 0
    with pytest.raises(ExecutionError, match=r"iou_threshold 1.5 is not in \[0, 1\]"):
        run("NonMaxSuppression", [BOXES, scores, np.array([1], np.int64),
                                  np.array([1.5], np.float32)], opset=11)
    with pytest.raises(ShapeError, match="center_point_box 2"):
        infer("NonMaxSuppression", [TensorType(F32, (1, 4, 4)), TensorType(F32, (1, 1, 4))],
              {"center_point_box": 2})


def test_roi_align_is_exact_on_linear_images():
    # Bilinear sampling reproduces a linear image exactly, so each bin averages
    # to the image at the bin centre.
    h, w = 12, 16
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x = np.stack([2 * xx + 3 * yy, -xx])[None]  # [1, 2, h, w]
    rois = np.array([[2.0, 3.0, 10.0, 9.0]], np.float32)  # x1, y1, x2, y2
    y = run("RoiAlign", [x, rois, np.zeros(1, np.int64)],
            {"output_height": 3, "output_width": 4, "sampling_ratio": 2}, opset=16)
    cy = 3 - 0.5 + (np.arange(3) + 0.5) * 6 / 3  # half_pixel shifts by -0.5
    cx = 2 - 0.5 + (np.arange(4) + 0.5) * 8 / 4
    np.testing.assert_allclose(y[0, 0], 2 * cx[None, :] + 3 * cy[:, None], rtol=1e-5)
    np.testing.assert_allclose(y[0, 1], np.broadcast_to(-cx, (3, 4)), rtol=1e-5)


def test_roi_align_infer_and_errors():
    (t,) = infer("RoiAlign", [TensorType(F32, ("n", 8, 20, 20)), TensorType(F32, ("r", 4)),
                              TensorType(DType.INT64, ("r",))], {"output_height": 7})
    assert t == TensorType(F32, ("r", 8, 7, 1))
    with pytest.raises(ShapeError, match="mode 'sum'"):
        infer("RoiAlign", [TensorType(F32, (1, 1, 2, 2)), TensorType(F32, (1, 4)),
                           TensorType(DType.INT64, (1,))], {"mode": "sum"})
    with pytest.raises(ExecutionError, match="batch index 3 is out of range"):
        run("RoiAlign", [np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 4), np.float32),
                         np.array([3], np.int64)], opset=16)


def test_det():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    y = run("Det", [x])
    assert y.shape == (2, 3) and y.dtype == np.float32
    np.testing.assert_allclose(y, np.linalg.det(x.astype(np.float64)), rtol=1e-4, atol=1e-5)
    (t,) = infer("Det", [TensorType(F32, ("b", "n", "n"))])
    assert t == TensorType(F32, ("b",))
    with pytest.raises(ShapeError, match="square, not 2x3"):
        infer("Det", [TensorType(F32, (2, 3))])


# == ImageDecoder ==========================================================================


def png_bytes(pixels: np.ndarray) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return np.frombuffer(buffer.getvalue(), np.uint8)


def test_image_decoder_formats():
    pytest.importorskip("PIL")
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    data = png_bytes(pixels)
    assert np.array_equal(run("ImageDecoder", [data], opset=20), pixels)
    assert np.array_equal(run("ImageDecoder", [data], {"pixel_format": "BGR"}, opset=20),
                          pixels[:, :, ::-1])
    gray = run("ImageDecoder", [data], {"pixel_format": "Grayscale"}, opset=20)
    luma = (pixels.astype(np.float64) @ [0.299, 0.587, 0.114])[:, :, None]
    assert gray.shape == (5, 7, 1) and np.abs(gray - luma).max() <= 1
    broken = run("ImageDecoder", [np.arange(10, dtype=np.uint8)], opset=20)
    assert broken.shape == (0, 0, 3)  # undecodable: empty, as the spec says


def test_image_decoder_without_pillow(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(UnsupportedError, match="needs the Pillow package"):
        run("ImageDecoder", [np.zeros(4, np.uint8)], opset=20)


# == optimizers =============================================================================


def test_adagrad_two_tensors_against_float64():
    r, t = np.array(0.5, np.float32), np.array(3, np.int64)
    x1, g1, h1 = (np.array([1.0, -2.0], np.float32), np.array([0.5, 0.25], np.float32),
                  np.array([1.0, 2.0], np.float32))
    x2, g2, h2 = np.array([3.0], np.float32), np.array([-1.0], np.float32), np.zeros(1, np.float32)
    attrs = {"decay_factor": 0.1, "epsilon": 1e-3, "norm_coefficient": 0.01}
    outs = run("Adagrad", [r, t, x1, x2, g1, g2, h1, h2], attrs, domain=TRAINING, outputs=4)
    for x, g, h, x_new, h_new in ((x1, g1, h1, outs[0], outs[2]), (x2, g2, h2, outs[1], outs[3])):
        gr = 0.01 * x.astype(np.float64) + g
        h_want = h + gr * gr
        x_want = x - 0.5 / 1.3 * gr / (np.sqrt(h_want) + 1e-3)
        np.testing.assert_allclose(h_new, h_want, rtol=1e-6)
        np.testing.assert_allclose(x_new, x_want, rtol=1e-6)
        assert x_new.dtype == np.float32


def test_optimizer_infer_checks_grouping():
    x = TensorType(F32, ("n",))
    scalar_r, scalar_t = TensorType(F32, ()), TensorType(DType.INT64, ())
    types = infer("Adam", [scalar_r, scalar_t, x, x, x, x], domain=TRAINING, num_outputs=3)
    assert types == [x, x, x]
    with pytest.raises(ShapeError, match="3 equally long groups"):
        infer("Momentum", [scalar_r, scalar_t, x, x, x, x],
              {"alpha": 0.9, "beta": 1.0, "mode": "standard", "norm_coefficient": 0.0},
              domain=TRAINING, num_outputs=2)
