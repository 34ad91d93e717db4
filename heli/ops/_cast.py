"""Type conversions: Cast, CastLike and BitCast.

:func:`cast_array` implements ONNX's Cast rules for every pair of element
types Heli knows, and is shared with the quantization ops:

* float -> float: round to nearest even; out of range gives +/-inf.
* float -> float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz): round to nearest even;
  with ``saturate`` out-of-range values (and infinities) clamp to +/-max,
  without it they become NaN (or inf for e5m2).  float4e2m1 has no inf or NaN
  encoding, so it always saturates.
* float -> float8e8m0: a power of two chosen by ``round_mode``.
* float -> integer: truncation toward zero (out of range is undefined in ONNX;
  we wrap like a C cast does); integer -> integer: keep the low bits.
* anything -> bool: nonzero is True.
* numbers <-> strings: as ONNX Runtime prints and parses them.

ml_dtypes' own ``astype`` is only trusted where it already follows these
rules (round to nearest even, non-saturating); everything else is spelled out.
"""

from __future__ import annotations

import math
import re

import ml_dtypes
import numpy as np

from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import DType, TensorType, Type
from heli.ops._infer import input_dtype, input_shape

FLOAT8 = frozenset({DType.FLOAT8E4M3FN, DType.FLOAT8E4M3FNUZ, DType.FLOAT8E5M2,
                    DType.FLOAT8E5M2FNUZ})
# Integer types narrower than a byte: (bits, signed).  ml_dtypes keeps one
# value per byte, in the low bits.
SUB_BYTE_INTS = {DType.INT4: (4, True), DType.UINT4: (4, False),
                 DType.INT2: (2, True), DType.UINT2: (2, False)}
# Small floats with no inf or NaN encoding (they always saturate), by bit width.
_NO_INF_BITS = {"FLOAT4E2M1": 4, "FLOAT6E2M3": 6, "FLOAT6E3M2": 6}
NO_INF_FLOATS = frozenset(d for d in DType if d.name in _NO_INF_BITS)
_ROUND_MODES = ("up", "down", "nearest")
_NATIVE_FLOATS = {np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)}


# --------------------------------------------------------------------------
# Cast semantics
# --------------------------------------------------------------------------


def cast_array(x: np.ndarray, to: DType, saturate: bool = True,
               round_mode: str = "up") -> np.ndarray:
    """``x`` converted to ``to`` following ONNX Cast (see the module docstring)."""
    # Overflow to inf and NaN -> int are defined results here, not accidents.
    with np.errstate(over="ignore", invalid="ignore"):
        return _cast(np.asarray(x), to, saturate, round_mode)


def _cast(x: np.ndarray, to: DType, saturate: bool, round_mode: str) -> np.ndarray:
    src = DType.from_numpy(x.dtype)
    if src is to:
        return x
    if to is DType.STRING:
        return _to_string(x, src)
    if src is DType.STRING:
        return _from_string(x, to, saturate, round_mode)
    if to is DType.FLOAT8E8M0:
        return _to_e8m0(_widen(x).astype(np.float64), saturate, round_mode)
    if to in FLOAT8 or to in NO_INF_FLOATS:
        wide = _widen(x)
        if wide.dtype not in _NATIVE_FLOATS or wide.dtype == np.float16:
            wide = wide.astype(np.float64 if wide.dtype.itemsize > 4 else np.float32)
        return _to_small_float(wide, to, saturate)
    if to.is_int:
        return _to_int(x, to)
    if to is DType.BOOL:
        return np.asarray(_widen(x) != 0)
    return _widen(x).astype(to.np)


def _widen(x: np.ndarray) -> np.ndarray:
    """``x`` in a numpy-native dtype holding every value exactly.

    The ml_dtypes floats (bfloat16, float8s, float4, e8m0) all fit float32,
    the sub-byte integers fit int8 / uint8.
    """
    dtype = DType.from_numpy(x.dtype)
    if dtype in SUB_BYTE_INTS:
        return x.astype(np.int8 if SUB_BYTE_INTS[dtype][1] else np.uint8)
    if dtype.is_float and x.dtype not in _NATIVE_FLOATS:
        return x.astype(np.float32)
    return x


def _to_small_float(x: np.ndarray, to: DType, saturate: bool) -> np.ndarray:
    """float32/float64 ``x`` to a float8, float6 or float4 type."""
    if saturate or to in NO_INF_FLOATS:
        # Clamping before rounding equals clamping the rounded value: rounding
        # is monotone and the bound is representable.  NaN passes through.
        limit = float(ml_dtypes.finfo(to.np).max)
        x = np.clip(x, -limit, limit)
    # ml_dtypes rounds to nearest even and does not saturate: overflow gives
    # NaN (inf for e5m2) and -0 becomes +0 for the fnuz types, as ONNX says.
    return x.astype(to.np)


def _to_int(x: np.ndarray, to: DType) -> np.ndarray:
    wide = _widen(x)
    if to in SUB_BYTE_INTS:
        bits, signed = SUB_BYTE_INTS[to]
        if wide.dtype.kind in "fc":
            wide = np.trunc(np.nan_to_num(wide.real.astype(np.float64), nan=0.0))
            wide = np.clip(wide, -(2.0**63), 2.0**63 - 1024)
        return _wrap(wide.astype(np.int64), bits, signed).astype(to.np)
    if wide.dtype.kind == "f" and wide.dtype.itemsize < 4:
        wide = wide.astype(np.float32)
    # A C-style conversion: floats truncate toward zero, integers keep their
    # low bits (numpy wraps on integer narrowing).
    return wide.astype(to.np)


def _wrap(values: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """int64 ``values`` reduced to their low ``bits`` bits (two's complement)."""
    low = values & ((1 << bits) - 1)
    if signed:
        low = np.where(low >= 1 << (bits - 1), low - (1 << bits), low)
    return low


def _to_e8m0(x: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    """float64 ``x`` to float8e8m0 (a bare exponent: 2**-127 ... 2**127, NaN).

    Negative inputs are unspecified in ONNX; their magnitude is used.
    """
    if round_mode not in _ROUND_MODES:
        raise ValueError(f"round_mode {round_mode!r} is not one of {list(_ROUND_MODES)}.")
    magnitude = np.abs(x)
    finite = np.isfinite(magnitude) & (magnitude > 0)
    mantissa, exponent = np.frexp(np.where(finite, magnitude, 1.0))  # m in [0.5, 1)
    exponent = exponent.astype(np.int64)
    if round_mode == "down":
        power = exponent - 1
    elif round_mode == "up":
        power = np.where(mantissa == 0.5, exponent - 1, exponent)
    else:  # nearest, ties (1.5 * 2**k) away from zero
        power = np.where(mantissa >= 0.75, exponent, exponent - 1)
    if saturate:
        biased = np.clip(power, -127, 127) + 127
        biased = np.where(np.isinf(magnitude), 254, biased)
        biased = np.where(magnitude == 0, 0, biased)
        biased = np.where(np.isnan(magnitude), 255, biased)
    else:
        in_range = finite & (power >= -127) & (power <= 127)
        biased = np.where(in_range, power + 127, 255)
    return biased.astype(np.uint8).view(ml_dtypes.float8_e8m0fnu)


# --------------------------------------------------------------------------
# strings
# --------------------------------------------------------------------------


def _to_string(x: np.ndarray, src: DType) -> np.ndarray:
    """Numbers printed as ONNX Runtime prints them (8 significant digits)."""
    wide = _widen(x)
    if src is DType.BOOL:
        texts = ["1" if v else "0" for v in wide.ravel().tolist()]
    elif src.is_int:
        texts = [str(v) for v in wide.ravel().tolist()]
    else:
        texts = [_format_float(v) for v in wide.ravel().tolist()]
    out = np.empty(len(texts), dtype=object)
    out[:] = texts
    return out.reshape(x.shape)


def _format_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    return format(value, ".8g")


# The longest numeric prefix, as C's strtod / strtoll accept it.
_FLOAT_PREFIX = re.compile(
    r"\s*([+-]?(?:inf(?:inity)?|nan|0x[0-9a-f]+|(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?))",
    re.IGNORECASE,
)
_INT_PREFIX = re.compile(r"\s*([+-]?\d+)")


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _parse_float(value: object) -> float:
    text = _text(value)
    match = _FLOAT_PREFIX.match(text)
    if not match:
        raise ValueError(f"the string {text!r} is not a number.")
    literal = match.group(1)
    if "x" in literal.lower():
        return float(int(literal, 16))
    return float(literal)


def _parse_int(value: object) -> int:
    text = _text(value)
    match = _INT_PREFIX.match(text)
    if not match:
        raise ValueError(f"the string {text!r} is not an integer.")
    return int(match.group(1))


def _from_string(x: np.ndarray, to: DType, saturate: bool, round_mode: str) -> np.ndarray:
    items = x.ravel().tolist()
    if to.is_float:
        parsed = np.array([_parse_float(v) for v in items], dtype=np.float64)
    else:
        # Integers and bool parse the leading integer (as strtoll does: "100.5"
        # is 100) and keep its low 64 bits.
        parsed = np.array([_parse_int(v) % (1 << 64) for v in items], dtype=np.uint64)
    return cast_array(parsed.reshape(x.shape), to, saturate, round_mode)


# --------------------------------------------------------------------------
# ops
# --------------------------------------------------------------------------


def _dtype_of_attr(ctx_or_none: InferContext | None, to: int | str) -> DType:
    """The DType an attribute ``to`` names: an ONNX code (or, in Cast-1, a name)."""
    if isinstance(to, str):
        name = {"FLOAT": "FLOAT32", "DOUBLE": "FLOAT64"}.get(to.upper(), to.upper())
        if name in DType.__members__:
            return DType[name]
        message = f"the type name {to!r} is not an ONNX data type."
        raise ctx_or_none.error(message) if ctx_or_none else ValueError(message)
    return DType.from_onnx(int(to))


def _check_round_mode(ctx: InferContext) -> None:
    mode = ctx.attrs.get("round_mode", "up")
    if mode not in _ROUND_MODES:
        raise ctx.error(f"round_mode {mode!r} is not one of {list(_ROUND_MODES)}.")


def _cast_infer(ctx: InferContext) -> list[Type | None]:
    _check_round_mode(ctx)
    return [TensorType(_dtype_of_attr(ctx, ctx.attrs["to"]), input_shape(ctx, 0))]


@op("Cast", infer=_cast_infer, inputs=1,
    attrs={"to": Attr.INT(), "saturate": Attr.INT(1), "round_mode": Attr.STRING("up")})
def cast(x, *, to, saturate, round_mode):
    """Elementwise conversion of ``x`` to the type ``to`` (ONNX Cast rules)."""
    return cast_array(x, _dtype_of_attr(None, to), bool(saturate), round_mode)


def _castlike_infer(ctx: InferContext) -> list[Type | None]:
    _check_round_mode(ctx)
    dtype = input_dtype(ctx, 1)
    return [TensorType(dtype, input_shape(ctx, 0)) if dtype else None]


@op("CastLike", infer=_castlike_infer, inputs=2,
    attrs={"saturate": Attr.INT(1), "round_mode": Attr.STRING("up")})
def cast_like(x, target_type, *, saturate, round_mode):
    """Cast ``x`` to the element type of ``target_type``."""
    to = DType.from_numpy(target_type.dtype)
    return cast_array(x, to, bool(saturate), round_mode)


def bit_width(dtype: DType) -> int:
    """The number of bits one element of ``dtype`` takes in ONNX."""
    if dtype in SUB_BYTE_INTS:
        return SUB_BYTE_INTS[dtype][0]
    if dtype in NO_INF_FLOATS:
        return _NO_INF_BITS[dtype.name]
    return dtype.itemsize * 8


def _bitcast_infer(ctx: InferContext) -> list[Type | None]:
    to = _dtype_of_attr(ctx, ctx.attrs["to"])
    src = input_dtype(ctx, 0)
    if DType.STRING in (src, to):
        raise ctx.error("BitCast does not accept string tensors.")
    if src is not None and bit_width(src) != bit_width(to):
        raise ctx.error(f"cannot reinterpret {src} ({bit_width(src)} bits) as {to} "
                        f"({bit_width(to)} bits): the bit widths differ.")
    return [TensorType(to, input_shape(ctx, 0))]


@op("BitCast", infer=_bitcast_infer, inputs=1, attrs={"to": Attr.INT()})
def bit_cast(x, *, to):
    """Reinterpret the (little-endian) bits of ``x`` as the type ``to``."""
    to = _dtype_of_attr(None, to)
    src = DType.from_numpy(x.dtype)
    if bit_width(src) != bit_width(to):
        raise ValueError(f"cannot reinterpret {src} as {to}: the bit widths differ.")
    x = np.array(x, order="C", copy=True)
    if bit_width(to) < 8:
        # ml_dtypes keeps a sub-byte value in the low bits of its byte.
        raw = x.view(np.uint8) & np.uint8((1 << bit_width(to)) - 1)
        return raw.view(to.np)
    if to is DType.BOOL:
        return x.view(np.uint8) != 0
    return x.view(to.np.newbyteorder("<")).astype(to.np, copy=False)
