"""Elementwise ops: type inference (symbolic shapes, dtype checks) and
reference semantics against independent oracles (hand values, Python math)."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from heli._errors import ShapeError
from heli.ir import DType, GraphBuilder, TensorType
from heli.ir._ops import get_op

F32, I64, BOOL = DType.FLOAT32, DType.INT64, DType.BOOL


def ref(name, *inputs, **attrs):
    opdef = get_op(name)
    return opdef.reference(*inputs, **opdef.resolve_attrs(attrs))


def infer(name, *types, **attrs):
    b = GraphBuilder()
    inputs = [b.add_input(f"x{i}", t) for i, t in enumerate(types)]
    (out,) = b.add_node(name, inputs, attrs, name="n")
    return out.type


# -- type inference -----------------------------------------------------------


def test_broadcast_keeps_symbols():
    t = infer("Add", TensorType(F32, ("N", 1, 4)), TensorType(F32, (3, 1)))
    assert t == TensorType(F32, ("N", 3, 4))
    t = infer("Where", TensorType(BOOL, ("N", 1)), TensorType(I64, (5,)), TensorType(I64, (1,)))
    assert t == TensorType(I64, ("N", 5))
    t = infer("Max", *[TensorType(F32, s) for s in [(2, 1, 1), ("S", 1), (7,)]])
    assert t == TensorType(F32, (2, "S", 7))


def test_comparisons_and_tests_give_bools():
    assert infer("Less", TensorType(F32, ("B", 2)), TensorType(F32, ())).dtype is BOOL
    assert infer("IsNaN", TensorType(F32, ("B",))) == TensorType(BOOL, ("B",))
    assert infer("Equal", TensorType(DType.STRING, (2,)),
                 TensorType(DType.STRING, (2,))) == TensorType(BOOL, (2,))


def test_unknown_rank_stays_unknown():
    assert infer("Mul", TensorType(F32, None), TensorType(F32, (3,))) == TensorType(F32, None)


def test_pow_output_has_base_dtype():
    assert infer("Pow", TensorType(I64, (3,)), TensorType(F32, (3,))) == TensorType(I64, (3,))


def test_inference_errors():
    with pytest.raises(ShapeError, match="input 1 has dtype int64 but input 0 has dtype float32"):
        infer("Add", TensorType(F32, (2,)), TensorType(I64, (2,)))
    with pytest.raises(ShapeError, match="Sqrt accepts only floating-point tensors"):
        infer("Sqrt", TensorType(DType.INT32, (2,)))
    with pytest.raises(ShapeError, match="cannot be broadcast"):
        infer("Sub", TensorType(F32, (2, 3)), TensorType(F32, (4,)))
    with pytest.raises(ShapeError, match="approximate must be 'none' or 'tanh', not 'fast'"):
        infer("Gelu", TensorType(F32, (2,)), approximate="fast")
    with pytest.raises(ShapeError, match="direction must be 'LEFT' or 'RIGHT'"):
        infer("BitShift", TensorType(I64, (2,)), TensorType(I64, (2,)), direction="UP")


# -- semantics ----------------------------------------------------------------


def test_erf_matches_python_math():
    x = np.concatenate([np.linspace(-6, 6, 2001), [1e-30, -1e-8, 0.0, np.inf, -np.inf]])
    want = np.array([math.erf(v) for v in x])
    got = ref("Erf", x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)
    assert np.isnan(ref("Erf", np.array([np.nan], np.float32)))[0]


def test_gelu_exact_and_tanh():
    x = np.array([-3.0, -1.0, 0.0, 0.5, 2.0], np.float32)
    exact = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(float)]
    tanh = [0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))
            for v in x.astype(float)]
    np.testing.assert_allclose(ref("Gelu", x), exact, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ref("Gelu", x, approximate="tanh"), tanh, rtol=1e-6, atol=1e-7)


def test_integer_div_truncates_and_mod_signs():
    a = np.array([7, -7, 7, -7], np.int32)
    b = np.array([2, 2, -2, -2], np.int32)
    assert ref("Div", a, b).tolist() == [3, -3, -3, 3]
    assert ref("Mod", a, b).tolist() == [1, 1, -1, -1]  # sign of the divisor
    assert ref("Mod", a, b, fmod=1).tolist() == [1, -1, 1, -1]  # sign of the dividend
    with pytest.raises(ValueError, match="Integer division by zero"):
        ref("Div", a, np.zeros(4, np.int32))


def test_integer_pow():
    x = np.array([2, -1, -1, 1, 3, 3], np.int64)
    y = np.array([-1, -3, -2, -5, 39, 2**63 - 1], np.int64)
    want = [0, -1, 1, 1, 3**39, pow(3, 2**63 - 1, 2**64) - 2**64]
    assert ref("Pow", x, y).tolist() == want
    assert ref("Pow", np.array([2], np.int32), np.array([2.5], np.float32)).tolist() == [5]
    with pytest.raises(ValueError, match="0 cannot be raised"):
        ref("Pow", np.array([0], np.int64), np.array([-1], np.int64))


def test_bitshift_out_of_range_counts():
    x = np.array([-8, 4, -1, 3], np.int8)
    y = np.array([8, -1, 100, 2], np.int8)
    assert ref("BitShift", x, y, direction="RIGHT").tolist() == [-1, 0, -1, 0]
    assert ref("BitShift", x, y, direction="LEFT").tolist() == [0, 0, 0, 12]


def test_clip_defaults_and_crossed_bounds():
    x = np.array([-np.inf, -2.0, 0.5, np.inf], np.float32)
    f32 = np.finfo(np.float32)
    assert ref("Clip", x).tolist() == [f32.min, -2.0, 0.5, f32.max]
    lo, hi = np.array(1, np.float32), np.array(0, np.float32)
    assert ref("Clip", x, lo, hi).tolist() == [0, 0, 0, 0]
    assert ref("Clip", np.array([-5, 9], np.int8), None, np.array(3, np.int8)).tolist() == [-5, 3]
    with pytest.raises(ValueError, match="min must hold one value"):
        ref("Clip", x, np.zeros(2, np.float32))


def test_dtypes_are_kept():
    h = np.array([-2.0, 0.25, 3.0], np.float16)
    bf = h.astype(ml_dtypes.bfloat16)
    for name, attrs in [("LeakyRelu", {"alpha": 0.1}), ("Selu", {}), ("Sigmoid", {}),
                        ("HardSwish", {}), ("Mish", {}), ("Gelu", {})]:
        assert ref(name, h, **attrs).dtype == np.float16, name
        assert ref(name, bf, **attrs).dtype == bf.dtype, name
    # 0-d inputs give 0-d arrays, not numpy scalars.
    out = ref("Mul", np.array(2.0, np.float32), np.array(3.0, np.float32))
    assert isinstance(out, np.ndarray) and out.shape == () and out.dtype == np.float32
    assert ref("Mean", np.array([1, 2], np.float16), np.array([2, 2], np.float16)).tolist() == [
        1.5, 2.0]


def test_activations_are_stable_at_extremes():
    x = np.array([-1000.0, -20.0, 0.0, 20.0, 1000.0], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = ref("Sigmoid", x)
        sp = ref("Softplus", x)
    np.testing.assert_allclose(s, [0, 1 / (1 + math.exp(20)), 0.5, 1 / (1 + math.exp(-20)), 1],
                               rtol=1e-6)
    np.testing.assert_allclose(sp, [0, math.log1p(math.exp(-20)), math.log(2), 20, 1000],
                               rtol=1e-6)


def test_isinf_directions():
    x = np.array([np.inf, -np.inf, np.nan, 1.0], np.float32)
    assert ref("IsInf", x).tolist() == [True, True, False, False]
    assert ref("IsInf", x, detect_negative=0).tolist() == [True, False, False, False]
    assert ref("IsInf", x, detect_positive=0).tolist() == [False, True, False, False]
