"""Quantization ops: type inference, error messages and numbers against
hand-computed values and float64 / naive-loop oracles."""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto

from heli._errors import ShapeError
from heli.ir._types import DType, TensorType
from heli.ops._quant import (
    conv_integer,
    dequantize_linear,
    dynamic_quantize_linear,
    matmul_integer,
    qlinear_conv,
    qlinear_matmul,
    quantize_linear,
)
from tests.ops.helpers import infer_types as infer

F32 = DType.FLOAT32
RNG = np.random.default_rng(0)
NO_CONV_ATTRS = dict(auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
                     strides=None)


def quantize(x, scale, zero_point=None, **attrs):
    attrs = {"axis": 1, "block_size": 0, "output_dtype": 0, "saturate": 1, "precision": 0,
             **attrs}
    return quantize_linear(x, scale, zero_point, **attrs)


def dequantize(x, scale, zero_point=None, **attrs):
    return dequantize_linear(x, scale, zero_point,
                             **{"axis": 1, "block_size": 0, "output_dtype": 0, **attrs})


# --------------------------------------------------------------------------- QuantizeLinear


def test_quantize_rounds_half_to_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 300, -300], np.float32)
    got = quantize(x, np.float32(1), np.int8(0))
    np.testing.assert_array_equal(got, np.array([0, 2, 2, 0, -2, 127, -128], np.int8))
    got = quantize(x, np.float32(0.5))  # no zero point: uint8
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, [1, 3, 5, 0, 0, 255, 0])


def test_quantize_blocked_with_a_partial_last_block():
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    scale = np.array([[1, 2, 4], [0.5, 1, 2]], np.float32)  # blocks of 2 along axis 1
    got = quantize(x, scale, block_size=2, output_dtype=TensorProto.INT16)
    want = np.rint(x / np.repeat(scale, 2, axis=1)[:, :5])
    np.testing.assert_array_equal(got, want.astype(np.int16))


def test_quantize_per_axis_negative_axis_to_int4():
    x = np.array([[1.0, -20.0], [3.0, 9.0]], np.float32)
    scale = np.array([1.0, 2.0], np.float32)
    zero_point = np.array([1, -1], ml_dtypes.int4)
    got = quantize(x, scale, zero_point, axis=-1)
    assert got.dtype == ml_dtypes.int4
    np.testing.assert_array_equal(got.astype(np.int8), [[2, -8], [4, 3]])  # -11 saturates


def test_quantize_float8_follows_saturate():
    x = np.array([1.0, 1e6], np.float32)
    zero_point = np.zeros(1, ml_dtypes.float8_e4m3fn)
    got = quantize(x, np.float32(2), zero_point).astype(np.float32)
    np.testing.assert_array_equal(got, [0.5, 448])
    got = quantize(x, np.float32(2), zero_point, saturate=0).astype(np.float32)
    assert got[0] == 0.5 and np.isnan(got[1])


def test_quantize_infer_dtype_and_symbolic_shape():
    x = TensorType(F32, ("batch", 8))
    (y,) = infer("QuantizeLinear", [x, TensorType(F32, ())])
    assert y == TensorType(DType.UINT8, ("batch", 8))
    (y,) = infer("QuantizeLinear", [x, TensorType(F32, (8,)), TensorType(DType.INT4, (8,))])
    assert y == TensorType(DType.INT4, ("batch", 8))
    (y,) = infer("QuantizeLinear", [x, TensorType(F32, ())],
                 {"output_dtype": TensorProto.FLOAT8E5M2})
    assert y.dtype is DType.FLOAT8E5M2


def test_quantize_infer_errors():
    x = TensorType(F32, (4, 6))
    with pytest.raises(ShapeError, match="output_dtype int8 differs from the zero point's type"):
        infer("QuantizeLinear", [x, TensorType(F32, ()), TensorType(DType.UINT8, ())],
              {"output_dtype": TensorProto.INT8})
    with pytest.raises(ShapeError, match="y_scale has 4 values, but the input has 6 along"):
        infer("QuantizeLinear", [x, TensorType(F32, (4,))])
    with pytest.raises(ShapeError, match="needs 2"):
        infer("QuantizeLinear", [x, TensorType(F32, (4, 3))], {"block_size": 3})
    with pytest.raises(ShapeError, match="axis 3 is out of range for an input of rank 2"):
        infer("QuantizeLinear", [x, TensorType(F32, (6,))], {"axis": 3})


# --------------------------------------------------------------------------- DequantizeLinear


def test_dequantize_per_axis_int4_and_float16_output():
    x = np.array([[-8, 7], [0, 3]], ml_dtypes.int4)
    scale = np.array([0.5, 4.0], np.float16)
    zero_point = np.array([1, -1], ml_dtypes.int4)
    got = dequantize(x, scale, zero_point, axis=0)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, [[-4.5, 3], [4, 16]])


def test_dequantize_e8m0_scale_needs_output_dtype():
    x = TensorType(DType.INT8, (3,))
    scale = TensorType(DType.FLOAT8E8M0, ())
    with pytest.raises(ShapeError, match="give output_dtype"):
        infer("DequantizeLinear", [x, scale])
    (y,) = infer("DequantizeLinear", [x, scale], {"output_dtype": TensorProto.FLOAT})
    assert y == TensorType(F32, (3,))
    got = dequantize(np.array([3, -1], np.int8), np.array(0.25, ml_dtypes.float8_e8m0fnu),
                     output_dtype=TensorProto.FLOAT)
    np.testing.assert_array_equal(got, np.array([0.75, -0.25], np.float32))


def test_dequantize_blocked_matches_oracle():
    x = RNG.integers(0, 255, (3, 7)).astype(np.uint8)
    scale = RNG.uniform(0.1, 1, (3, 3)).astype(np.float32)
    zero_point = RNG.integers(0, 255, (3, 3)).astype(np.uint8)
    got = dequantize(x, scale, zero_point, block_size=3)
    want = (x - np.repeat(zero_point, 3, 1)[:, :7].astype(np.float64)) \
        * np.repeat(scale, 3, 1)[:, :7]
    np.testing.assert_allclose(got, want, rtol=1e-6)


# --------------------------------------------------------------------------- dynamic


def test_dynamic_quantize_linear():
    x = np.array([-1.0, 3.0, 0.5, 0.6], np.float32)
    y, scale, zero_point = dynamic_quantize_linear(x)
    assert scale == np.float32(4 / 255) and zero_point == 64  # 63.75 rounds to 64
    np.testing.assert_array_equal(y, [0, 255, 96, 102])
    y, scale, zero_point = dynamic_quantize_linear(np.zeros((2, 2), np.float32))
    assert scale.shape == () and scale == 1 and zero_point == 0 and y.shape == (2, 2)
    (ty, ts, tz) = infer("DynamicQuantizeLinear", [TensorType(F32, ("n", 4))], num_outputs=3)
    assert ty == TensorType(DType.UINT8, ("n", 4))
    assert ts == TensorType(F32, ()) and tz == TensorType(DType.UINT8, ())


# --------------------------------------------------------------------------- matmuls


def test_matmul_integer_per_row_zero_point():
    a = RNG.integers(0, 255, (2, 3, 5)).astype(np.uint8)
    b = RNG.integers(-128, 127, (5, 4)).astype(np.int8)
    a_zp = np.array([1, 2, 3], np.uint8)
    b_zp = np.array([0, 1, -1, 2], np.int8)
    got = matmul_integer(a, b, a_zp, b_zp)
    want = (a.astype(np.int64) - a_zp[:, None]) @ (b.astype(np.int64) - b_zp)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_matmul_integer_infer():
    (y,) = infer("MatMulInteger", [TensorType(DType.UINT8, ("b", "m", 16)),
                                   TensorType(DType.INT8, (16, 8))])
    assert y == TensorType(DType.INT32, ("b", "m", 8))
    (y,) = infer("MatMulInteger", [TensorType(DType.UINT8, (16,)),
                                   TensorType(DType.INT8, (3, 16, 8))])
    assert y.shape == (3, 8)
    with pytest.raises(ShapeError, match="the inner dimensions differ"):
        infer("MatMulInteger", [TensorType(DType.UINT8, (2, 3)), TensorType(DType.UINT8, (4, 2))])


def test_qlinear_matmul_matches_float_oracle():
    a = RNG.integers(0, 255, (4, 6)).astype(np.uint8)
    b = RNG.integers(0, 255, (6, 3)).astype(np.uint8)
    scales = [np.float32(0.02), np.float32(0.03), np.float32(0.25)]
    zps = [np.uint8(120), np.uint8(130), np.uint8(100)]
    got = qlinear_matmul(a, scales[0], zps[0], b, scales[1], zps[1], scales[2], zps[2])
    real = ((a - 120.0) * 0.02) @ ((b - 130.0) * 0.03)
    want = np.clip(np.rint(real / 0.25) + 100, 0, 255)
    assert got.dtype == np.uint8
    assert np.abs(got.astype(np.int64) - want).max() <= 1  # float32 vs float64 ties
    scale, u8, i8 = TensorType(F32, ()), TensorType(DType.UINT8, ()), TensorType(DType.INT8, ())
    (t,) = infer("QLinearMatMul", [TensorType(DType.UINT8, ("n", 6)), scale, u8,
                                   TensorType(DType.UINT8, (6, 3)), scale, u8, scale, i8])
    assert t == TensorType(DType.INT8, ("n", 3))


# --------------------------------------------------------------------------- convolutions


def naive_conv(x, w, group=1, strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0)):
    """A direct 2-D convolution by loops, in int64."""
    x = np.pad(x.astype(np.int64), [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    oh = (h - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wd - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    out = np.zeros((n, m, oh, ow), np.int64)
    for b, o, i, j in itertools.product(range(n), range(m), range(oh), range(ow)):
        g = o // (m // group)
        patch = x[b, g * cg:(g + 1) * cg,
                  i * strides[0]:i * strides[0] + dilations[0] * (kh - 1) + 1:dilations[0],
                  j * strides[1]:j * strides[1] + dilations[1] * (kw - 1) + 1:dilations[1]]
        out[b, o, i, j] = (patch * w[o]).sum()
    return out


def test_conv_integer_matches_naive_loops():
    x = RNG.integers(0, 255, (2, 4, 7, 6)).astype(np.uint8)
    w = RNG.integers(-128, 127, (6, 2, 3, 2)).astype(np.int8)
    w_zp = np.arange(6, dtype=np.int8)
    attrs = dict(NO_CONV_ATTRS, group=2, strides=(2, 1), dilations=(1, 2), pads=(1, 0, 2, 1))
    got = conv_integer(x, w, np.uint8(3), w_zp, **attrs)
    want = naive_conv(x.astype(np.int64) - 3, w.astype(np.int64) - w_zp[:, None, None, None],
                      group=2, strides=(2, 1), dilations=(1, 2), pads=(1, 0, 2, 1))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_qlinear_conv_per_channel_with_bias():
    x = RNG.integers(-128, 127, (1, 3, 5, 5)).astype(np.int8)
    w = RNG.integers(-128, 127, (4, 3, 3, 3)).astype(np.int8)
    w_scale = np.array([0.01, 0.02, 0.005, 0.04], np.float32)
    bias = np.array([100, -2000, 0, 50], np.int32)
    attrs = dict(NO_CONV_ATTRS, pads=(1, 1, 1, 1))
    got = qlinear_conv(x, np.float32(0.05), np.int8(-3), w, w_scale, np.zeros(4, np.int8),
                       np.float32(0.7), np.int8(10), bias, **attrs)
    acc = naive_conv(x.astype(np.int64) + 3, w, pads=(1, 1, 1, 1)) + bias[:, None, None]
    real = acc * (0.05 * w_scale[:, None, None].astype(np.float64))
    want = np.clip(np.rint(real / 0.7) + 10, -128, 127)
    assert got.dtype == np.int8
    assert np.abs(got.astype(np.int64) - want).max() <= 1  # float32 requantization ties


def test_conv_infer_shapes_and_errors():
    x = TensorType(DType.UINT8, ("batch", 4, 9, 10))
    w = TensorType(DType.UINT8, (8, 2, 3, 3))
    (y,) = infer("ConvInteger", [x, w], {"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1]})
    assert y == TensorType(DType.INT32, ("batch", 8, 5, 5))
    (y,) = infer("ConvInteger", [x, w], {"group": 2, "auto_pad": "SAME_UPPER", "strides": [2, 3]})
    assert y.shape == ("batch", 8, 5, 4)
    (y,) = infer("ConvInteger", [TensorType(DType.UINT8, (1, 4, "h", 10)), w], {"group": 2})
    assert y.shape[:2] == (1, 8) and isinstance(y.shape[2], str) and y.shape[3] == 8
    with pytest.raises(ShapeError, match="the input has 4 channels but the weights"):
        infer("ConvInteger", [x, w])
    with pytest.raises(ShapeError, match="auto_pad 'SAME' is not one of"):
        infer("ConvInteger", [x, w], {"group": 2, "auto_pad": "SAME"})
