"""Elementwise ops: unary math, binary arithmetic, logic and comparisons,
variadic reductions over broadcast inputs, and activation functions.

Floats narrower than float32 (float16, bfloat16, the float8s) are computed in
float32 and rounded back once, as ONNX Runtime does; float32 and float64 are
computed in their own precision.  Outputs always keep the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import ml_dtypes
import numpy as np

from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import DType, TensorType, Type
from heli.ops._infer import broadcast_shapes, tensor_input

# --------------------------------------------------------------------------
# dtype categories and type inference
# --------------------------------------------------------------------------

_SIGNED_INTS = {DType.INT8, DType.INT16, DType.INT32, DType.INT64, DType.INT4, DType.INT2}

# Kinds of element types an op accepts, with the words an error message uses.
_KINDS: dict[str, tuple[Callable[[DType], bool], str]] = {
    "float": (lambda d: d.is_float, "floating-point"),
    "numeric": (lambda d: d.is_float or d.is_int, "numeric"),
    "signed": (lambda d: d.is_float or d in _SIGNED_INTS, "signed numeric"),
    "int": (lambda d: d.is_int, "integer"),
    "bool": (lambda d: d is DType.BOOL, "bool"),
    "comparable": (lambda d: d.is_float or d.is_int or d is DType.BOOL, "numeric or bool"),
    "any": (lambda d: True, "any"),
}


def _check_kind(ctx: InferContext, index: int, kind: str) -> TensorType | None:
    """Input ``index``'s type (None if unknown), checked to be of dtype ``kind``."""
    t = tensor_input(ctx, index)
    accepts, words = _KINDS[kind]
    if t is not None and not accepts(t.dtype):
        raise ctx.error(
            f"input {index} has dtype {t.dtype}, but {ctx.op.name} accepts only {words} tensors."
        )
    return t


def _check_same_dtype(ctx: InferContext, types: Sequence[TensorType | None],
                      indices: Sequence[int]) -> None:
    known = [(i, t) for i, t in zip(indices, types, strict=True) if t is not None]
    for i, t in known[1:]:
        if t.dtype is not known[0][1].dtype:
            raise ctx.error(
                f"input {i} has dtype {t.dtype} but input {known[0][0]} has dtype "
                f"{known[0][1].dtype}; {ctx.op.name} needs them to be the same."
            )


def _unary(kind: str, out: DType | None = None) -> Callable[[InferContext], list[Type | None]]:
    """Same shape as input 0; dtype of input 0 (or ``out``)."""

    def infer(ctx: InferContext) -> list[Type | None]:
        t = _check_kind(ctx, 0, kind)
        if t is None:
            return [None]
        return [TensorType(out or t.dtype, t.shape)]

    return infer


def _nary(kind: str, out: DType | None = None, same: bool = True,
          first: int = 0) -> Callable[[InferContext], list[Type | None]]:
    """Broadcast over every input from ``first`` on; dtype of input ``first``
    (or ``out``).  ``same``: those inputs must share one dtype."""

    def infer(ctx: InferContext) -> list[Type | None]:
        indices = range(first, len(ctx.input_types))
        types = [_check_kind(ctx, i, kind if i == first or same else "numeric") for i in indices]
        if same:
            _check_same_dtype(ctx, types, indices)
        all_types = [tensor_input(ctx, i) for i in range(len(ctx.input_types))]
        if any(t is None for t in all_types):
            return [None]
        shape = broadcast_shapes([t.shape for t in all_types], ctx)
        return [TensorType(out or all_types[first].dtype, shape)]

    return infer


# --------------------------------------------------------------------------
# numeric helpers
# --------------------------------------------------------------------------


# Floats that numpy (or ml_dtypes) would compute in their own low precision.
_NARROW_FLOATS = frozenset(d.np for d in DType if d.is_float and d.itemsize < 4)


def _wide(x: np.ndarray) -> np.ndarray:
    """``x`` in a dtype numpy computes well: narrow floats become float32."""
    return x.astype(np.float32) if x.dtype in _NARROW_FLOATS else x


def _result(value, dtype: np.dtype) -> np.ndarray:
    """``value`` as an array of exactly ``dtype`` (numpy returns 0-d results as scalars)."""
    return np.asarray(value).astype(dtype, copy=False)


def _float_unary(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Apply ``fn`` in the input's computing precision and round back once."""

    def apply(x: np.ndarray) -> np.ndarray:
        return _result(fn(_wide(x)), x.dtype)

    return apply


_SQRT_PI = math.sqrt(math.pi)
# Coefficients 2^n / (1*3*5*...*(2n+1)) of erf's positive series (see _erf).
_ERF_SERIES = [1.0]
for _n in range(1, 33):
    _ERF_SERIES.append(_ERF_SERIES[-1] * 2.0 / (2 * _n + 1))


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 to about 1e-15 relative error (numpy has no erf).

    |x| < 2: the series with only positive terms, so no cancellation,
        erf(x) = 2/sqrt(pi) * x * exp(-x^2) * sum_n 2^n x^(2n) / (1*3*...*(2n+1));
    |x| >= 2: the continued fraction
        erfc(x) = exp(-x^2) / sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))).
    """
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    out = np.empty_like(a)
    small = a < 2.0

    xs = a[small]
    x2 = xs * xs
    series = np.full_like(xs, _ERF_SERIES[-1])
    for c in reversed(_ERF_SERIES[:-1]):  # Horner in x^2
        series *= x2
        series += c
    out[small] = (2.0 / _SQRT_PI) * xs * np.exp(-x2) * series

    xl = a[~small]  # also inf and NaN, which come out as 1 and NaN
    frac = xl.copy()
    for k in range(40, 0, -1):
        frac = xl + (k / 2.0) / frac
    out[~small] = 1.0 - np.exp(-xl * xl) / (_SQRT_PI * frac)
    # copysign keeps -0.0 and the sign of the input.
    return np.copysign(out, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) without overflow: max(x, 0) + log1p(exp(-|x|))."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _scalar(x: np.ndarray, value: float):
    """``value`` in ``x``'s dtype, so that float32 math stays float32."""
    return x.dtype.type(value)


# --------------------------------------------------------------------------
# unary math
# --------------------------------------------------------------------------


def _register_unary(name: str, kind: str, fn: Callable[[np.ndarray], np.ndarray],
                    doc: str) -> None:
    fn.__doc__ = doc
    op(name, infer=_unary(kind), inputs=1)(fn)


for _name, _kind, _fn, _doc in [
    ("Abs", "numeric", _float_unary(np.abs), "Elementwise |x|."),
    ("Neg", "signed", _float_unary(np.negative), "Elementwise -x (integers wrap)."),
    ("Sign", "numeric", _float_unary(np.sign), "Elementwise sign: -1, 0 or 1."),
    ("Reciprocal", "float", _float_unary(np.reciprocal), "Elementwise 1 / x."),
    ("Floor", "float", _float_unary(np.floor), "Elementwise floor."),
    ("Ceil", "float", _float_unary(np.ceil), "Elementwise ceiling."),
    ("Round", "float", _float_unary(np.rint), "Round to the nearest integer, halves to even."),
    ("Sqrt", "float", _float_unary(np.sqrt), "Elementwise square root."),
    ("Exp", "float", _float_unary(np.exp), "Elementwise e^x."),
    ("Log", "float", _float_unary(np.log), "Elementwise natural logarithm."),
    ("Sin", "float", _float_unary(np.sin), "Elementwise sine."),
    ("Cos", "float", _float_unary(np.cos), "Elementwise cosine."),
    ("Tan", "float", _float_unary(np.tan), "Elementwise tangent."),
    ("Asin", "float", _float_unary(np.arcsin), "Elementwise arcsine."),
    ("Acos", "float", _float_unary(np.arccos), "Elementwise arccosine."),
    ("Atan", "float", _float_unary(np.arctan), "Elementwise arctangent."),
    ("Sinh", "float", _float_unary(np.sinh), "Elementwise hyperbolic sine."),
    ("Cosh", "float", _float_unary(np.cosh), "Elementwise hyperbolic cosine."),
    ("Asinh", "float", _float_unary(np.arcsinh), "Elementwise inverse hyperbolic sine."),
    ("Acosh", "float", _float_unary(np.arccosh), "Elementwise inverse hyperbolic cosine."),
    ("Atanh", "float", _float_unary(np.arctanh), "Elementwise inverse hyperbolic tangent."),
    ("Tanh", "float", _float_unary(np.tanh), "Elementwise hyperbolic tangent."),
    ("Sigmoid", "float", _float_unary(_sigmoid), "Elementwise 1 / (1 + exp(-x))."),
    ("Softplus", "float", _float_unary(_softplus), "Elementwise log(1 + exp(x))."),
    ("Softsign", "float", _float_unary(lambda x: x / (1 + np.abs(x))),
     "Elementwise x / (1 + |x|)."),
    ("Mish", "float", _float_unary(lambda x: x * np.tanh(_softplus(x))),
     "Elementwise x * tanh(softplus(x))."),
    ("Relu", "signed", _float_unary(lambda x: np.maximum(x, 0)), "Elementwise max(x, 0)."),
]:
    _register_unary(_name, _kind, _fn, _doc)


@op("Erf", infer=_unary("numeric"), inputs=1)
def erf(x):
    """Elementwise error function (computed in float64, rounded to the input dtype)."""
    return _result(_erf(x.astype(np.float64)), x.dtype)


@op("Not", infer=_unary("bool"), inputs=1)
def not_(x):
    """Elementwise logical not."""
    return np.logical_not(x)


@op("BitwiseNot", infer=_unary("int"), inputs=1)
def bitwise_not(x):
    """Elementwise bitwise complement."""
    return _result(np.invert(x), x.dtype)


@op("IsNaN", infer=_unary("float", DType.BOOL), inputs=1)
def isnan(x):
    """True where x is NaN."""
    return np.asarray(np.isnan(_wide(x)))


@op("IsInf", infer=_unary("float", DType.BOOL), inputs=1,
    attrs={"detect_negative": Attr.INT(1), "detect_positive": Attr.INT(1)})
def isinf(x, *, detect_negative, detect_positive):
    """True where x is +inf (if detect_positive) or -inf (if detect_negative)."""
    x = _wide(x)
    found = np.zeros(x.shape, dtype=bool)
    if detect_positive:
        found |= np.isposinf(x)
    if detect_negative:
        found |= np.isneginf(x)
    return found


# --------------------------------------------------------------------------
# activations with attributes
# --------------------------------------------------------------------------


@op("LeakyRelu", attrs={"alpha": Attr.FLOAT(0.01)}, infer=_unary("float"), inputs=1)
def leaky_relu(x, *, alpha):
    """x where x >= 0, alpha * x elsewhere."""
    w = _wide(x)
    return _result(np.where(w >= 0, w, w * _scalar(w, alpha)), x.dtype)


@op("ThresholdedRelu", attrs={"alpha": Attr.FLOAT(1.0)}, infer=_unary("float"), inputs=1)
def thresholded_relu(x, *, alpha):
    """x where x > alpha, 0 elsewhere."""
    w = _wide(x)
    return _result(np.where(w > _scalar(w, alpha), w, 0), x.dtype)


@op("Elu", attrs={"alpha": Attr.FLOAT(1.0)}, infer=_unary("float"), inputs=1)
def elu(x, *, alpha):
    """x where x >= 0, alpha * (exp(x) - 1) elsewhere."""
    w = _wide(x)
    return _result(np.where(w >= 0, w, _scalar(w, alpha) * np.expm1(w)), x.dtype)


@op("Selu", attrs={"alpha": Attr.FLOAT(1.67326319217681884765625),
                   "gamma": Attr.FLOAT(1.05070102214813232421875)},
    infer=_unary("float"), inputs=1)
def selu(x, *, alpha, gamma):
    """gamma * x where x > 0, gamma * alpha * (exp(x) - 1) elsewhere."""
    w = _wide(x)
    g, a = _scalar(w, gamma), _scalar(w, alpha)
    return _result(np.where(w > 0, g * w, g * (a * np.expm1(w))), x.dtype)


@op("Celu", attrs={"alpha": Attr.FLOAT(1.0)}, infer=_unary("float"), inputs=1)
def celu(x, *, alpha):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""
    w = _wide(x)
    a = _scalar(w, alpha)
    return _result(np.maximum(w, 0) + np.minimum(0, a * np.expm1(w / a)), x.dtype)


@op("HardSigmoid", attrs={"alpha": Attr.FLOAT(0.2), "beta": Attr.FLOAT(0.5)},
    infer=_unary("float"), inputs=1)
def hard_sigmoid(x, *, alpha, beta):
    """max(0, min(1, alpha * x + beta))."""
    w = _wide(x)
    return _result(np.clip(_scalar(w, alpha) * w + _scalar(w, beta), 0, 1), x.dtype)


@op("HardSwish", infer=_unary("float"), inputs=1)
def hard_swish(x):
    """x * max(0, min(1, x / 6 + 1 / 2))."""
    w = _wide(x)
    return _result(w * np.clip(_scalar(w, 1 / 6) * w + _scalar(w, 0.5), 0, 1), x.dtype)


@op("Swish", attrs={"alpha": Attr.FLOAT(1.0)}, infer=_unary("float"), inputs=1)
def swish(x, *, alpha):
    """x * sigmoid(alpha * x)."""
    w = _wide(x)
    return _result(w * _sigmoid(_scalar(w, alpha) * w), x.dtype)


def _gelu_infer(ctx: InferContext) -> list[Type | None]:
    if ctx.attrs["approximate"] not in ("none", "tanh"):
        raise ctx.error(
            f"approximate must be 'none' or 'tanh', not {ctx.attrs['approximate']!r}."
        )
    return _unary("float")(ctx)


@op("Gelu", attrs={"approximate": Attr.STRING("none")}, infer=_gelu_infer, inputs=1)
def gelu(x, *, approximate):
    """0.5 * x * (1 + erf(x / sqrt(2))), or its tanh approximation."""
    w = _wide(x)
    if approximate == "tanh":
        inner = _scalar(w, math.sqrt(2 / math.pi)) * (w + _scalar(w, 0.044715) * w * w * w)
        cdf = np.tanh(inner)
    else:
        cdf = _erf(w.astype(np.float64) * math.sqrt(0.5)).astype(w.dtype)
    return _result(_scalar(w, 0.5) * w * (1 + cdf), x.dtype)


@op("Shrink", attrs={"bias": Attr.FLOAT(0.0), "lambd": Attr.FLOAT(0.5)},
    infer=_unary("numeric"), inputs=1)
def shrink(x, *, bias, lambd):
    """x + bias where x < -lambd, x - bias where x > lambd, 0 elsewhere."""
    # Integers are shifted in float64 and truncated back, as a C cast does.
    w = x.astype(np.float64) if x.dtype.kind in "iu" else _wide(x)
    b, lam = _scalar(w, bias), _scalar(w, lambd)
    return _result(np.where(w < -lam, w + b, np.where(w > lam, w - b, 0)), x.dtype)


@op("PRelu", infer=_nary("numeric"), inputs=2)
def prelu(x, slope):
    """x where x >= 0, slope * x elsewhere (slope broadcasts to x)."""
    w, s = _wide(x), _wide(slope)
    return _result(np.where(w < 0, w * s, w), x.dtype)


@op("Clip", infer=_unary("numeric"), inputs=(1, 3))
def clip(x, lo=None, hi=None):
    """min(hi, max(x, lo)): hi wins where lo > hi.  A missing bound is the
    dtype's lowest / highest finite value, so floats clip infinities too."""
    w = _wide(x)
    lo = _clip_bound(lo, "min") if lo is not None else _float_limit(x.dtype, "min")
    hi = _clip_bound(hi, "max") if hi is not None else _float_limit(x.dtype, "max")
    if lo is not None:
        w = np.maximum(w, np.asarray(lo).astype(w.dtype))
    if hi is not None:
        w = np.minimum(w, np.asarray(hi).astype(w.dtype))
    return _result(w, x.dtype)


def _float_limit(dtype: np.dtype, which: str):
    """A float dtype's lowest or highest finite value; None for integers,
    whose range already is the whole dtype."""
    if dtype.kind in "iub":
        return None
    return getattr(ml_dtypes.finfo(dtype), which)


def _clip_bound(bound: np.ndarray, what: str) -> np.ndarray:
    if bound.size != 1:
        raise ValueError(f"Clip's {what} must hold one value, but it has shape "
                         f"{list(bound.shape)!r}.")
    return _wide(bound).reshape(())


# --------------------------------------------------------------------------
# binary arithmetic
# --------------------------------------------------------------------------


def _check_nonzero(divisor: np.ndarray, what: str) -> None:
    if divisor.dtype.kind in "iu" and not np.all(divisor):
        raise ValueError(f"Integer {what} by zero: the divisor holds a 0.")


def _float_binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    def apply(a, b):
        return _result(fn(_wide(a), _wide(b)), a.dtype)

    return apply


for _name, _fn, _doc in [
    ("Add", np.add, "Elementwise a + b (broadcasting; integers wrap)."),
    ("Sub", np.subtract, "Elementwise a - b (broadcasting; integers wrap)."),
    ("Mul", np.multiply, "Elementwise a * b (broadcasting; integers wrap)."),
]:
    _fn = _float_binary(_fn)
    _fn.__doc__ = _doc
    op(_name, infer=_nary("numeric"), inputs=2)(_fn)


@op("Div", infer=_nary("numeric"), inputs=2)
def div(a, b):
    """Elementwise a / b; integer division truncates toward zero, as in C."""
    if a.dtype.kind not in "iu":
        return _result(_wide(a) / _wide(b), a.dtype)
    _check_nonzero(b, "division")
    q = np.floor_divide(a, b)
    if a.dtype.kind == "i":
        # floor_divide rounds toward -inf; step back up where the exact
        # quotient was negative and not whole.
        inexact = (a - q * b) != 0
        q = q + (inexact & ((a < 0) != (b < 0)))
    return _result(q, a.dtype)


def _mod_infer(ctx: InferContext) -> list[Type | None]:
    if ctx.attrs["fmod"] not in (0, 1):
        raise ctx.error(f"fmod must be 0 or 1, not {ctx.attrs['fmod']!r}.")
    return _nary("numeric")(ctx)


@op("Mod", attrs={"fmod": Attr.INT(0)}, infer=_mod_infer, inputs=2)
def mod(a, b, *, fmod):
    """Remainder of a / b: with the divisor's sign (fmod=0, Python's %) or the
    dividend's sign (fmod=1, C's fmod)."""
    _check_nonzero(b, "modulo")
    fn = np.fmod if fmod else np.mod
    return _result(fn(_wide(a), _wide(b)), a.dtype)


@op("Pow", infer=_nary("numeric", same=False), inputs=2)
def pow_(x, y):
    """Elementwise x ** y in x's dtype."""
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":
        return _int_pow(x, y)
    if x.dtype == y.dtype:
        return _result(np.power(_wide(x), _wide(y)), x.dtype)
    # Mixed types: like C++ std::pow on mixed arguments, compute in double
    # and convert back (float to integer truncates toward zero).
    z = np.power(x.astype(np.float64), y.astype(np.float64))
    if x.dtype.kind in "iu":
        z = np.trunc(z)
    return _result(z, x.dtype)


def _int_pow(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Integer power, wrapping on overflow; negative exponents give the
    truncated quotient 1 / x**|y| (so 0 unless x is 1 or -1)."""
    negative = y < 0
    if np.any(negative & (x == 0)):
        raise ValueError("Integer 0 cannot be raised to a negative power.")
    wide = np.uint64 if x.dtype.kind == "u" else np.int64
    e = np.where(negative, 0, y)
    # Powers wrap modulo 2**64, where odd bases repeat with a period dividing
    # 2**62 and even ones are 0 from exponent 64 on: an exponent reduced into
    # [2**62, 2**63) gives the same result and fits int64.
    if e.dtype.itemsize == 8:
        period = 2**62
        e = np.where(e >= period, e % period + period, e)
    e = e.astype(wide)
    z = np.power(x.astype(wide), e)
    if np.any(negative):
        odd = (y & 1).astype(bool)
        inverse = np.where(x == 1, 1, np.where(x == -1, np.where(odd, -1, 1), 0))
        z = np.where(negative, inverse.astype(wide), z)
    return _result(z, x.dtype)


def _bitshift_infer(ctx: InferContext) -> list[Type | None]:
    if ctx.attrs["direction"] not in ("LEFT", "RIGHT"):
        raise ctx.error(
            f"direction must be 'LEFT' or 'RIGHT', not {ctx.attrs['direction']!r}."
        )
    return _nary("int")(ctx)


@op("BitShift", attrs={"direction": Attr.STRING()}, infer=_bitshift_infer, inputs=2)
def bitshift(x, y, *, direction):
    """x shifted left or right by y bits.  Right shifts of signed values are
    arithmetic; a shift by a negative count or by the bit width or more leaves
    only the sign fill: -1 for a right shift of a negative x, 0 otherwise."""
    bits = x.dtype.itemsize * 8
    valid = (y >= 0) & (y < bits)
    count = np.where(valid, y, 0).astype(x.dtype)
    if direction == "LEFT":
        z = np.where(valid, np.left_shift(x, count), 0)
    else:
        fill = np.where(x < 0, -1, 0) if x.dtype.kind == "i" else 0
        z = np.where(valid, np.right_shift(x, count), fill)
    return _result(z, x.dtype)


for _name, _fn, _kind in [
    ("BitwiseAnd", np.bitwise_and, "int"),
    ("BitwiseOr", np.bitwise_or, "int"),
    ("BitwiseXor", np.bitwise_xor, "int"),
    ("And", np.logical_and, "bool"),
    ("Or", np.logical_or, "bool"),
    ("Xor", np.logical_xor, "bool"),
]:

    def _make(fn=_fn):
        def apply(a, b):
            return _result(fn(a, b), a.dtype)

        return apply

    _apply = _make()
    _apply.__doc__ = f"Elementwise {_fn.__name__.replace('_', ' ')} (broadcasting)."
    op(_name, infer=_nary(_kind), inputs=2)(_apply)


# --------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------


def _make_compare(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    def apply(a, b):
        if a.dtype == object:
            return np.asarray(fn(a, b), dtype=bool)
        return np.asarray(fn(_wide(a), _wide(b)), dtype=bool)

    return apply


for _name, _fn, _kind in [
    ("Equal", np.equal, "any"),
    ("Greater", np.greater, "comparable"),
    ("GreaterOrEqual", np.greater_equal, "comparable"),
    ("Less", np.less, "comparable"),
    ("LessOrEqual", np.less_equal, "comparable"),
]:
    _apply = _make_compare(_fn)
    _apply.__doc__ = f"Elementwise {_fn.__name__.replace('_', ' ')} (broadcasting), as bools."
    op(_name, infer=_nary(_kind, DType.BOOL), inputs=2)(_apply)


# --------------------------------------------------------------------------
# variadic and selection
# --------------------------------------------------------------------------


def _fold(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], inputs: Sequence[np.ndarray]):
    acc = _wide(inputs[0])
    for x in inputs[1:]:
        acc = fn(acc, _wide(x))
    # One input: broadcast nothing, but still return a fresh array.
    return np.array(acc, copy=True) if len(inputs) == 1 else acc


@op("Max", infer=_nary("numeric"), inputs=(1, None))
def max_(*inputs):
    """Elementwise maximum of the (broadcast) inputs; NaN wins."""
    return _result(_fold(np.maximum, inputs), inputs[0].dtype)


@op("Min", infer=_nary("numeric"), inputs=(1, None))
def min_(*inputs):
    """Elementwise minimum of the (broadcast) inputs; NaN wins."""
    return _result(_fold(np.minimum, inputs), inputs[0].dtype)


@op("Sum", infer=_nary("numeric"), inputs=(1, None))
def sum_(*inputs):
    """Elementwise sum of the (broadcast) inputs, added left to right."""
    return _result(_fold(np.add, inputs), inputs[0].dtype)


@op("Mean", infer=_nary("float"), inputs=(1, None))
def mean(*inputs):
    """Elementwise mean of the (broadcast) inputs."""
    total = _fold(np.add, inputs)
    return _result(total / total.dtype.type(len(inputs)), inputs[0].dtype)


def _where_infer(ctx: InferContext) -> list[Type | None]:
    _check_kind(ctx, 0, "bool")
    return _nary("any", first=1)(ctx)


@op("Where", infer=_where_infer, inputs=3)
def where(condition, x, y):
    """x where condition is true, y elsewhere (all three broadcast)."""
    return _result(np.where(condition, x, y), x.dtype)
