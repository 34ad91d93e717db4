"""Integer (int8 / int32) ops with exact fixed-point semantics, domain ``heli``.

These are what a quantized graph becomes after :class:`heli.passes.QdqToInt`
fuses each DequantizeLinear → Conv / MatMul / Gemm (→ Relu / Clip) →
QuantizeLinear chain: int8 in, int8 out, int32 accumulation that wraps modulo
2**32, and a requantization defined bit for bit (``heli.quant._fixed_point``)::

    acc = sum((x - x_zero_point) * w) + bias          int32, wrapping
    y   = clamp(round_half_even(acc * M / 2**s) + y_zero_point, lo, hi)

with ``M`` (``multiplier``) and ``s`` (``shift``) per output channel (or one
value for all).  Their reference functions here are the integer reference
that every accelerator (the NPU) must match exactly.  Weights are symmetric
(zero point 0); a fused ReLU is ``lo = y_zero_point``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import DType, TensorType, Type
from heli.quant._fixed_point import MAX_SHIFT, requantize, wrap_int32

DOMAIN = "heli"

_REQUANT_ATTRS = {
    "multiplier": Attr.INTS(),       # per output channel, or one value
    "shift": Attr.INTS(),            # 0..63, same length as multiplier
    "y_zero_point": Attr.INT(0),
    "lo": Attr.INT(-128),            # clip bounds of the int8 output (lo = zp: ReLU)
    "hi": Attr.INT(127),
}


def _tensor(ctx: InferContext, index: int, dtype: DType, what: str) -> TensorType:
    t = ctx.input_types[index] if index < len(ctx.input_types) else None
    if not isinstance(t, TensorType):
        raise ctx.error(f"the {what} input must be a tensor, not {t}.")
    if t.dtype != dtype:
        raise ctx.error(f"the {what} input must be {dtype.name.lower()}, not "
                        f"{t.dtype.name.lower()}.")
    return t


def _check_requant(ctx: InferContext, channels: int | str | None) -> None:
    mult, shift = ctx.attrs["multiplier"], ctx.attrs["shift"]
    if len(mult) != len(shift) or not mult:
        raise ctx.error(f"multiplier ({len(mult)} values) and shift ({len(shift)} values) "
                        f"must be non-empty and of the same length.")
    if isinstance(channels, int) and len(mult) not in (1, channels):
        raise ctx.error(f"there are {len(mult)} multipliers for {channels} output channels.")
    if any(not 0 <= s <= MAX_SHIFT for s in shift):
        raise ctx.error(f"the shifts {list(shift)} must lie in 0..{MAX_SHIFT}.")
    if any(not -(1 << 31) <= m < 1 << 31 for m in mult):
        raise ctx.error(f"the multipliers {list(mult)} must be int32 values.")
    lo, hi, zp = ctx.attrs["lo"], ctx.attrs["hi"], ctx.attrs["y_zero_point"]
    if not -128 <= lo <= hi <= 127 or not -128 <= zp <= 127:
        raise ctx.error(f"the clip bounds lo = {lo}, hi = {hi} and the zero point {zp} must "
                        f"be int8 values with lo <= hi.")


def _requant(acc: np.ndarray, multiplier: Sequence[int], shift: Sequence[int], axis: int,
             y_zero_point: int, lo: int, hi: int) -> np.ndarray:
    """int32 accumulators (wrapped) → int8, parameters along ``axis``."""
    shape = [1] * acc.ndim
    shape[axis] = -1
    mult = np.asarray(multiplier, np.int64).reshape(shape)
    shifts = np.asarray(shift, np.int64).reshape(shape)
    return requantize(wrap_int32(acc), mult, shifts, y_zero_point, lo, hi)


# --------------------------------------------------------------------------
# QConv
# --------------------------------------------------------------------------


def _conv_geometry(attrs, x_shape, w_shape) -> tuple[int, int]:
    (kh, kw), (sh, sw) = w_shape[2:], attrs["strides"]
    (dh, dw), (pt, pl, pb, pr) = attrs["dilations"], attrs["pads"]
    oh = (x_shape[2] + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (x_shape[3] + pl + pr - (kw - 1) * dw - 1) // sw + 1
    return oh, ow


def _qconv_infer(ctx: InferContext) -> list[Type | None]:
    x = _tensor(ctx, 0, DType.INT8, "X")
    w = _tensor(ctx, 1, DType.INT8, "W")
    if ctx.has_input(2):
        _tensor(ctx, 2, DType.INT32, "B")
    a = ctx.attrs
    if len(a["strides"]) != 2 or len(a["dilations"]) != 2 or len(a["pads"]) != 4:
        raise ctx.error("QConv is 2-D: strides and dilations need 2 values, pads 4.")
    if min(a["strides"]) < 1 or min(a["dilations"]) < 1 or min(a["pads"]) < 0:
        raise ctx.error(f"strides {a['strides']}, dilations {a['dilations']} must be positive "
                        f"and pads {a['pads']} non-negative.")
    if x.shape is None or w.shape is None:
        return [TensorType(DType.INT8, None)]
    if len(x.shape) != 4 or len(w.shape) != 4:
        raise ctx.error(f"X {x.shape} and W {w.shape} must be 4-D (NCHW, OIHW).")
    group = a["group"]
    co = w.shape[0]
    _check_requant(ctx, co)
    if isinstance(co, int) and (group < 1 or co % group):
        raise ctx.error(f"the {co} output channels are not divisible into {group} groups.")
    if isinstance(x.shape[1], int) and isinstance(w.shape[1], int) and \
            x.shape[1] != w.shape[1] * group:
        raise ctx.error(f"X has {x.shape[1]} channels, but W expects {w.shape[1]} x {group} "
                        f"groups.")
    if all(isinstance(d, int) for d in (*x.shape[2:], *w.shape[2:])):
        oh, ow = _conv_geometry(a, x.shape, w.shape)
        if oh < 1 or ow < 1:
            raise ctx.error(f"the output would be empty ({oh} x {ow}).")
    else:
        return [TensorType(DType.INT8, None)]
    return [TensorType(DType.INT8, (x.shape[0], co, oh, ow))]


@op("QConv", domain=DOMAIN, infer=_qconv_infer, inputs=(2, 3), attrs={
    "strides": Attr.INTS((1, 1)), "pads": Attr.INTS((0, 0, 0, 0)),
    "dilations": Attr.INTS((1, 1)), "group": Attr.INT(1), "x_zero_point": Attr.INT(0),
    **_REQUANT_ATTRS})
def qconv(x, w, bias=None, *, strides, pads, dilations, group, x_zero_point, multiplier,
          shift, y_zero_point, lo, hi):
    """Quantized 2-D convolution, NCHW int8 → NCHW int8 (weights OIHW int8,
    symmetric; bias int32; padding holds the input zero point, i.e. 0 after
    subtracting it)."""
    n, c, _, _ = x.shape
    co, cig, kh, kw = w.shape
    oh, ow = _conv_geometry({"strides": strides, "pads": pads, "dilations": dilations},
                            x.shape, w.shape)
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dilations, pads
    xp = np.pad(x.astype(np.int64) - x_zero_point, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    xg = xp.reshape(n, group, cig, *xp.shape[2:])
    wg = w.astype(np.int64).reshape(group, co // group, cig, kh, kw)
    acc = np.zeros((n, group, co // group, oh, ow), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xg[..., i * dh:i * dh + (oh - 1) * sh + 1:sh,
                       j * dw:j * dw + (ow - 1) * sw + 1:sw]
            acc += np.einsum("ngchw,goc->ngohw", patch, wg[..., i, j])
    acc = acc.reshape(n, co, oh, ow)
    if bias is not None:
        acc += bias.astype(np.int64).reshape(1, co, 1, 1)
    return _requant(acc, multiplier, shift, 1, y_zero_point, lo, hi)


# --------------------------------------------------------------------------
# QMatMul
# --------------------------------------------------------------------------


def _qmatmul_infer(ctx: InferContext) -> list[Type | None]:
    a = _tensor(ctx, 0, DType.INT8, "A")
    b = _tensor(ctx, 1, DType.INT8, "B")
    if ctx.has_input(2):
        _tensor(ctx, 2, DType.INT32, "bias")
    if b.shape is None or len(b.shape) != 2:
        raise ctx.error(f"B must be a 2-D (K, N) matrix, not of shape {b.shape}.")
    _check_requant(ctx, b.shape[1])
    if a.shape is None:
        return [TensorType(DType.INT8, None)]
    if len(a.shape) < 1:
        raise ctx.error("A must have at least one dimension.")
    k = a.shape[-1]
    if isinstance(k, int) and isinstance(b.shape[0], int) and k != b.shape[0]:
        raise ctx.error(f"A has {k} columns but B has {b.shape[0]} rows.")
    return [TensorType(DType.INT8, (*a.shape[:-1], b.shape[1]))]


@op("QMatMul", domain=DOMAIN, infer=_qmatmul_infer, inputs=(2, 3), attrs={
    "a_zero_point": Attr.INT(0), **_REQUANT_ATTRS})
def qmatmul(a, b, bias=None, *, a_zero_point, multiplier, shift, y_zero_point, lo, hi):
    """Quantized ``A @ B`` (+ bias): A int8 (..., M, K), B int8 (K, N) symmetric,
    bias int32 (N,); requantized per column of the output."""
    acc = (a.astype(np.int64) - a_zero_point) @ b.astype(np.int64)
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    return _requant(acc, multiplier, shift, acc.ndim - 1, y_zero_point, lo, hi)


# --------------------------------------------------------------------------
# QAdd
# --------------------------------------------------------------------------


def _qadd_infer(ctx: InferContext) -> list[Type | None]:
    a = _tensor(ctx, 0, DType.INT8, "A")
    b = _tensor(ctx, 1, DType.INT8, "B")
    _check_requant(ctx, None)
    if len(ctx.attrs["multiplier"]) != 1:
        raise ctx.error("QAdd takes one multiplier and one shift.")
    for name in ("a_multiplier", "b_multiplier"):
        if not -(1 << 15) <= ctx.attrs[name] < 1 << 15:
            raise ctx.error(f"{name} = {ctx.attrs[name]} is not an int16 value.")
    if a.shape is not None and b.shape is not None and \
            all(isinstance(d, int) for d in (*a.shape, *b.shape)) and a.shape != b.shape:
        raise ctx.error(f"A {a.shape} and B {b.shape} must have the same shape.")
    return [TensorType(DType.INT8, a.shape if a.shape is not None else b.shape)]


@op("QAdd", domain=DOMAIN, infer=_qadd_infer, inputs=2, attrs={
    "a_zero_point": Attr.INT(0), "a_multiplier": Attr.INT(), "b_zero_point": Attr.INT(0),
    "b_multiplier": Attr.INT(), **_REQUANT_ATTRS})
def qadd(a, b, *, a_zero_point, a_multiplier, b_zero_point, b_multiplier, multiplier, shift,
         y_zero_point, lo, hi):
    """Quantized elementwise add (same shapes): ``acc = (a - za)·ma + (b - zb)·mb``
    with int16 multipliers, then requantized with one multiplier and shift."""
    acc = ((a.astype(np.int64) - a_zero_point) * a_multiplier
           + (b.astype(np.int64) - b_zero_point) * b_multiplier)
    return requantize(wrap_int32(acc), multiplier[0], shift[0], y_zero_point, lo, hi)


# --------------------------------------------------------------------------
# QMaxPool
# --------------------------------------------------------------------------


def _qmaxpool_infer(ctx: InferContext) -> list[Type | None]:
    x = _tensor(ctx, 0, DType.INT8, "X")
    a = ctx.attrs
    if len(a["kernel_shape"]) != 2 or len(a["strides"]) != 2 or len(a["pads"]) != 4:
        raise ctx.error("QMaxPool is 2-D: kernel_shape and strides need 2 values, pads 4.")
    (kh, kw), (pt, pl, pb, pr) = a["kernel_shape"], a["pads"]
    if min(a["kernel_shape"]) < 1 or min(a["strides"]) < 1 or min(a["pads"]) < 0 or \
            max(pt, pb) >= kh or max(pl, pr) >= kw:
        raise ctx.error(f"kernel_shape {a['kernel_shape']} and strides {a['strides']} must "
                        f"be positive, pads {a['pads']} non-negative and below the kernel.")
    if x.shape is None:
        return [TensorType(DType.INT8, None)]
    if len(x.shape) != 4:
        raise ctx.error(f"X must be 4-D (NCHW), not of shape {x.shape}.")
    h, w = x.shape[2:]
    if not (isinstance(h, int) and isinstance(w, int)):
        return [TensorType(DType.INT8, None)]
    oh, ow = _pool_geometry(a, h, w)
    if oh < 1 or ow < 1:
        raise ctx.error(f"the output would be empty ({oh} x {ow}).")
    return [TensorType(DType.INT8, (*x.shape[:2], oh, ow))]


def _pool_geometry(attrs, h: int, w: int) -> tuple[int, int]:
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = attrs["kernel_shape"], attrs["strides"], attrs["pads"]
    return (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1


@op("QMaxPool", domain=DOMAIN, infer=_qmaxpool_infer, inputs=1, attrs={
    "kernel_shape": Attr.INTS(), "strides": Attr.INTS((1, 1)),
    "pads": Attr.INTS((0, 0, 0, 0))})
def qmaxpool(x, *, kernel_shape, strides, pads):
    """Max pooling of int8 NCHW (exact; padding never wins, as -128 or -inf)."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel_shape, strides, pads
    oh, ow = _pool_geometry({"kernel_shape": kernel_shape, "strides": strides, "pads": pads},
                            *x.shape[2:])
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=-128)
    out = np.full((*x.shape[:2], oh, ow), -128, np.int8)
    for i in range(kh):
        for j in range(kw):
            np.maximum(out, xp[..., i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw],
                       out=out)
    return out


# --------------------------------------------------------------------------
# QLut
# --------------------------------------------------------------------------


def _qlut_infer(ctx: InferContext) -> list[Type | None]:
    x = _tensor(ctx, 0, DType.INT8, "X")
    table = ctx.attrs["table"]
    if len(table) != 256 or any(not -128 <= v <= 127 for v in table):
        raise ctx.error(f"the table must hold 256 int8 values, not {len(table)} values "
                        f"in {min(table, default=0)}..{max(table, default=0)}.")
    return [TensorType(DType.INT8, x.shape)]


@op("QLut", domain=DOMAIN, infer=_qlut_infer, inputs=1, attrs={"table": Attr.INTS()})
def qlut(x, *, table):
    """Any function of one int8 value as a lookup table: ``y = table[x + 128]``
    (what :class:`heli.passes.QdqToInt` makes of DequantizeLinear → elementwise
    float ops → QuantizeLinear, e.g. a hard-swish between two layers)."""
    return np.asarray(table, np.int8)[x.astype(np.int16) + 128]
