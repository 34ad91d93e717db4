"""Cast, CastLike and BitCast: type inference, error messages, and the
conversion rules of the ONNX spec checked against hand-computed values."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper

import heli
from heli._errors import ShapeError
from heli.ir._types import DType, TensorType
from heli.ops._cast import bit_cast, cast, cast_array
from tests.ops.helpers import infer_types as infer

F32 = DType.FLOAT32


def as_f32(x):
    return np.asarray(x).astype(np.float32)


# --------------------------------------------------------------------------- inference


def test_cast_infer_keeps_symbolic_shape():
    x = TensorType(F32, ("batch", 3))
    (y,) = infer("Cast", [x], {"to": TensorProto.FLOAT8E4M3FN})
    assert y == TensorType(DType.FLOAT8E4M3FN, ("batch", 3))
    (y,) = infer("CastLike", [x, TensorType(DType.INT4, (7,))])
    assert y == TensorType(DType.INT4, ("batch", 3))


def test_cast_infer_rejects_bad_round_mode():
    with pytest.raises(ShapeError, match="round_mode 'sideways' is not one of"):
        infer("Cast", [TensorType(F32, (2,))], {"to": TensorProto.FLOAT8E8M0,
                                                 "round_mode": "sideways"})


def test_bitcast_infer_checks_bit_width():
    (y,) = infer("BitCast", [TensorType(F32, ("n",))], {"to": TensorProto.INT32})
    assert y == TensorType(DType.INT32, ("n",))
    (y,) = infer("BitCast", [TensorType(DType.INT4, (2,))], {"to": TensorProto.FLOAT4E2M1})
    assert y.dtype is DType.FLOAT4E2M1
    with pytest.raises(ShapeError, match=r"float32 \(32 bits\) as int64 \(64 bits\)"):
        infer("BitCast", [TensorType(F32, (2,))], {"to": TensorProto.INT64})


# --------------------------------------------------------------------------- float8 / float4


def test_float8_round_half_to_even_and_saturation():
    # e4m3fn around 16: spacing 2, so 17 and 19 are ties -> 16 and 20 (even mantissas).
    x = np.array([17, 19, 1e6, -1e6, np.inf, -np.inf, np.nan], np.float32)
    got = as_f32(cast_array(x, DType.FLOAT8E4M3FN))
    np.testing.assert_array_equal(got, [16, 20, 448, -448, 448, -448, np.nan])
    got = as_f32(cast_array(x, DType.FLOAT8E4M3FN, saturate=False))
    np.testing.assert_array_equal(got[:2], [16, 20])
    assert np.isnan(got[2:]).all()
    got = as_f32(cast_array(x, DType.FLOAT8E5M2, saturate=False))
    np.testing.assert_array_equal(got[2:6], [np.inf, -np.inf, np.inf, -np.inf])
    got = as_f32(cast_array(x, DType.FLOAT8E5M2))
    np.testing.assert_array_equal(got[2:6], [57344, -57344, 57344, -57344])


def test_float8_fnuz_has_no_negative_zero():
    got = cast_array(np.array([-0.0], np.float32), DType.FLOAT8E4M3FNUZ)
    assert got.view(np.uint8)[0] == 0
    got = cast_array(np.array([-0.0], np.float32), DType.FLOAT8E4M3FN)
    assert got.view(np.uint8)[0] == 0x80


def test_float4_always_saturates():
    x = np.array([1e6, -np.inf, 5.0, 0.25], np.float32)
    # 5 is a tie between 4 and 6 (mantissa even at 4); 0.25 between 0 and 0.5 -> 0.
    for saturate in (True, False):
        got = as_f32(cast_array(x, DType.FLOAT4E2M1, saturate=saturate))
        np.testing.assert_array_equal(got, [6, -6, 4, 0])


def test_float_to_float_overflow_is_infinite():
    got = cast_array(np.array([1e300, -1e300, 65520.0]), DType.FLOAT16)
    np.testing.assert_array_equal(got, [np.inf, -np.inf, np.inf])


# --------------------------------------------------------------------------- float8e8m0


@pytest.mark.parametrize(("mode", "want"), [
    ("up", [2.0**-127, 0.125, 2, 4, 4, 1, 2.0**127]),
    ("down", [2.0**-127, 0.0625, 1, 2, 2, 1, 2.0**127]),
    ("nearest", [2.0**-127, 0.125, 1, 4, 2, 1, 2.0**127]),
])
def test_e8m0_round_modes(mode, want):
    x = np.array([0.0, 0.1, 1.1, 3.0, 2.9, 1.0, 1e39])
    got = cast_array(x, DType.FLOAT8E8M0, round_mode=mode)
    np.testing.assert_array_equal(got.astype(np.float64), want)


def test_e8m0_without_saturation_gives_nan_out_of_range():
    x = np.array([0.0, 1e39, np.inf, 2.0**-140, 8.0], np.float64)
    got = cast_array(x, DType.FLOAT8E8M0, saturate=False, round_mode="nearest")
    assert np.isnan(got.astype(np.float32)[:4]).all()
    assert got.astype(np.float32)[4] == 8


# --------------------------------------------------------------------------- integers, bool


def test_float_to_int_truncates_and_int_narrowing_keeps_low_bits():
    np.testing.assert_array_equal(cast_array(np.array([2.7, -2.7], np.float32), DType.INT32),
                                  [2, -2])
    # The spec's example: 200 (int16) -> -56 (int8).
    assert cast_array(np.array([200], np.int16), DType.INT8)[0] == -56
    got = cast_array(np.array([200, -9, 7], np.int16), DType.INT4)
    np.testing.assert_array_equal(got.astype(np.int8), [-8, 7, 7])
    got = cast_array(np.array([3.9, -3.9, 17.0], np.float32), DType.UINT4)
    np.testing.assert_array_equal(got.astype(np.uint8), [3, 13, 1])


def test_bool_conversions():
    x = np.array([0.0, -0.0, np.nan, 0.5], np.float32)
    np.testing.assert_array_equal(cast_array(x, DType.BOOL), [False, False, True, True])
    bf = np.array([0, 2], ml_dtypes.bfloat16)
    np.testing.assert_array_equal(cast_array(bf, DType.BOOL), [False, True])
    np.testing.assert_array_equal(cast_array(np.array([True, False]), DType.FLOAT16), [1, 0])


# --------------------------------------------------------------------------- strings


def test_numbers_to_strings():
    x = np.array([1.5, np.nan, np.inf, -np.inf, 1 / 3, 1e20], np.float32)
    got = cast(x, to=TensorProto.STRING, saturate=1, round_mode="up")
    assert got.dtype == object
    assert got.tolist() == ["1.5", "NaN", "INF", "-INF", "0.33333334", "1e+20"]
    got = cast(np.array([[-5, 7]], np.int64), to=TensorProto.STRING, saturate=1, round_mode="up")
    assert got.shape == (1, 2) and got.tolist() == [["-5", "7"]]


def test_strings_to_numbers():
    s = np.array(["1E8", " -2.5", "inf", "-INF", "NaN", "100.5"], dtype=object)
    got = cast(s, to=TensorProto.FLOAT, saturate=1, round_mode="up")
    np.testing.assert_array_equal(got, np.array([1e8, -2.5, np.inf, -np.inf, np.nan, 100.5],
                                                np.float32))
    # Integers take the leading integer, as strtoll does; narrowing wraps.
    s = np.array(["100.5", "-3", "300"], dtype=object)
    got = cast(s, to=TensorProto.INT8, saturate=1, round_mode="up")
    np.testing.assert_array_equal(got, np.array([100, -3, 44], np.int8))
    with pytest.raises(ValueError, match="the string 'abc' is not a number"):
        cast(np.array(["abc"], dtype=object), to=TensorProto.FLOAT, saturate=1, round_mode="up")


def test_string_cast_runs_end_to_end():
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.DOUBLE)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.STRING, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["n"])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    result = heli.compile(m, debug=True).run({"x": np.array(["0.25", "-1e3"], dtype=object)})
    np.testing.assert_array_equal(result["y"], [0.25, -1000.0])


# --------------------------------------------------------------------------- BitCast


def test_bitcast_reinterprets_bits():
    got = bit_cast(np.array([1.0, -2.0], np.float32), to=TensorProto.INT32)
    np.testing.assert_array_equal(got, [0x3F800000, -0x40000000])
    got = bit_cast(np.array(-1, ml_dtypes.int4), to=TensorProto.UINT4)
    assert got.shape == () and int(got) == 15
    nibbles = np.array([0x9, 0x7], np.uint8).astype(ml_dtypes.uint4)
    got = bit_cast(nibbles, to=TensorProto.FLOAT4E2M1)
    np.testing.assert_array_equal(got.astype(np.float32), [-0.5, 6.0])
    got = bit_cast(np.array([1 + 2j], np.complex64), to=TensorProto.INT64)
    assert got.view(np.complex64)[0] == 1 + 2j
