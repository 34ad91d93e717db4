"""Quantization ops: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear and
the integer / quantized products MatMulInteger, QLinearMatMul, ConvInteger and
QLinearConv.

Quantizing rounds half to even and saturates to the target range; float8 and
float4 targets go through Cast's conversion (:func:`heli.ops._cast.cast_array`).
Integer products are computed exactly: the operands (zero points already
subtracted) are small integers, so a float64 BLAS product is exact, and the
result wraps to int32 as ONNX allows ("accumulation may overflow if and only if
in 32 bits").  Requantization (QLinear*) scales the int32 accumulator in
float32 by ``a_scale * b_scale / y_scale``, as ONNX Runtime does.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import Dim, DType, Shape, TensorType, Type
from heli.ops._cast import SUB_BYTE_INTS, cast_array
from heli.ops._infer import broadcast_shapes, input_dtype, input_shape, unknown_dim

# --------------------------------------------------------------------------
# quantize / dequantize arithmetic
# --------------------------------------------------------------------------


def _int_range(dtype: DType) -> tuple[int, int]:
    if dtype in SUB_BYTE_INTS:
        bits, signed = SUB_BYTE_INTS[dtype]
        return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    info = np.iinfo(dtype.np)
    return int(info.min), int(info.max)


def _wide(x: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """``x`` (any numeric type, ml_dtypes included) as ``dtype``."""
    return np.asarray(x).astype(dtype)


def quantize_values(values: np.ndarray, zero_point: np.ndarray | None, to: DType,
                    saturate: bool = True) -> np.ndarray:
    """``values`` (already divided by the scale) plus the zero point, rounded half
    to even and saturated to ``to``; float targets follow Cast's rules."""
    if to.is_int:
        lo, hi = _int_range(to)
        q = np.rint(values).astype(np.float64)
        if zero_point is not None:
            q = q + _wide(zero_point)
        q = np.clip(q, lo, hi)
        # NaN has no integer value; a C conversion makes it 0 after saturation.
        q = np.where(np.isnan(q), 0.0, q)
        return q.astype(np.int64).astype(to.np)
    if to.is_float:
        work = values.astype(np.float64 if values.dtype == np.float64 else np.float32)
        if zero_point is not None:
            work = work + _wide(zero_point, work.dtype)
        return cast_array(work, to, saturate)
    raise ValueError(f"cannot quantize to the type {to}.")


def _granularity_problem(p_shape: Shape, x_shape: Shape, axis: int, block_size: int,
                         name: str) -> str | None:
    """Why a scale / zero point of ``p_shape`` does not fit ``x_shape``, or None."""
    rank = len(x_shape)
    if _is_per_tensor(p_shape):
        return None
    if not -rank <= axis < rank:
        return f"axis {axis!r} is out of range for an input of rank {rank}."
    axis %= rank
    dim = x_shape[axis]
    if block_size > 0 and len(p_shape) == rank:
        for i, (p, d) in enumerate(zip(p_shape, x_shape, strict=True)):
            if i != axis and isinstance(p, int) and isinstance(d, int) and p != d:
                return (f"{name} has shape {list(p_shape)}, which does not match the input "
                        f"shape {list(x_shape)} outside the block axis {axis}.")
        blocks = p_shape[axis]
        if isinstance(blocks, int) and isinstance(dim, int) and blocks != -(-dim // block_size):
            return (f"{name} has {blocks} blocks along axis {axis}, but an input dimension of "
                    f"{dim} with block_size {block_size} needs {-(-dim // block_size)}.")
        return None
    if len(p_shape) == 1:
        length = p_shape[0]
        if isinstance(length, int) and isinstance(dim, int) and length != dim:
            return (f"{name} has {length} values, but the input has {dim} along the "
                    f"quantization axis {axis}.")
        return None
    return (f"{name} has shape {list(p_shape)}, which is neither a scalar, a 1-D per-axis "
            f"tensor nor a blocked tensor (block_size {block_size}) for an input of shape "
            f"{list(x_shape)}.")


def _is_per_tensor(shape: Shape) -> bool:
    return len(shape) == 0 or (len(shape) == 1 and shape[0] == 1)


def _expand_param(p: np.ndarray | None, x_shape: tuple[int, ...], axis: int, block_size: int,
                  name: str) -> np.ndarray | None:
    """Scale or zero point ``p`` made broadcastable against the input."""
    if p is None:
        return None
    problem = _granularity_problem(p.shape, x_shape, axis, block_size, name)
    if problem:
        raise ValueError(problem)
    if _is_per_tensor(p.shape):
        return p.reshape(())
    rank = len(x_shape)
    axis %= rank
    if block_size > 0 and p.ndim == rank:
        expanded = np.repeat(p, block_size, axis=axis)
        return np.take(expanded, np.arange(x_shape[axis]), axis=axis)
    return p.reshape([-1 if i == axis else 1 for i in range(rank)])


def _division_dtype(scale_dtype: np.dtype, precision: int) -> np.dtype:
    """The type x / scale is computed in: ``precision``, else the scale's type."""
    if precision:
        return DType.from_onnx(precision).np
    dtype = DType.from_numpy(scale_dtype)
    if dtype in (DType.FLOAT32, DType.FLOAT64, DType.FLOAT16, DType.BFLOAT16):
        return dtype.np
    return np.dtype(np.float32)


def _quantize_out_dtype(output_dtype: int, zero_point_dtype: DType | None) -> DType:
    if output_dtype:
        out = DType.from_onnx(output_dtype)
        if zero_point_dtype is not None and zero_point_dtype is not out:
            raise ValueError(f"output_dtype {out} differs from the zero point's type "
                             f"{zero_point_dtype}.")
        return out
    return zero_point_dtype or DType.UINT8


def _check_params(ctx: InferContext, x_index: int, params: Sequence[tuple[int, str]]) -> None:
    """Type-time check of scale / zero point shapes against the input."""
    x_shape = input_shape(ctx, x_index)
    shapes = [(input_shape(ctx, i), name) for i, name in params if ctx.has_input(i)]
    if len(shapes) == 2 and shapes[0][0] is not None and shapes[1][0] is not None:
        a, b = shapes[0][0], shapes[1][0]
        if _is_per_tensor(a) and _is_per_tensor(b):
            pass  # a scalar and a 1-element vector mean the same
        elif len(a) != len(b) or any(isinstance(p, int) and isinstance(q, int) and p != q
                                   for p, q in zip(a, b, strict=False)):
            raise ctx.error(f"{shapes[0][1]} has shape {list(a)} but {shapes[1][1]} has shape "
                            f"{list(b)}; they must be equal.")
    if x_shape is None:
        return
    for shape, name in shapes:
        if shape is not None:
            problem = _granularity_problem(shape, x_shape, ctx.attrs["axis"],
                                           ctx.attrs["block_size"], name)
            if problem:
                raise ctx.error(problem)


def _quantize_infer(ctx: InferContext) -> list[Type | None]:
    try:
        out = _quantize_out_dtype(ctx.attrs["output_dtype"], input_dtype(ctx, 2))
    except ValueError as error:
        raise ctx.error(str(error)) from None
    if not (out.is_int or out.is_float):
        raise ctx.error(f"cannot quantize to the type {out}.")
    _check_params(ctx, 0, [(1, "y_scale"), (2, "y_zero_point")])
    return [TensorType(out, input_shape(ctx, 0))]


@op("QuantizeLinear", infer=_quantize_infer, inputs=(2, 3),
    attrs={"axis": Attr.INT(1), "block_size": Attr.INT(0), "output_dtype": Attr.INT(0),
           "saturate": Attr.INT(1), "precision": Attr.INT(0)})
def quantize_linear(x, y_scale, y_zero_point=None, *, axis, block_size, output_dtype, saturate,
                    precision):
    """y = saturate(round_half_even(x / y_scale) + y_zero_point)."""
    zp_dtype = DType.from_numpy(y_zero_point.dtype) if y_zero_point is not None else None
    out = _quantize_out_dtype(output_dtype, zp_dtype)
    scale = _expand_param(y_scale, x.shape, axis, block_size, "y_scale")
    zero_point = _expand_param(y_zero_point, x.shape, axis, block_size, "y_zero_point")
    work = _division_dtype(y_scale.dtype, precision)
    values = _wide(x, work) / _wide(scale, work)
    return quantize_values(np.asarray(values), zero_point, out, bool(saturate))


def _dequantize_out_dtype(output_dtype: int, scale_dtype: DType | None) -> DType | None:
    return DType.from_onnx(output_dtype) if output_dtype else scale_dtype


def _dequantize_infer(ctx: InferContext) -> list[Type | None]:
    out = _dequantize_out_dtype(ctx.attrs["output_dtype"], input_dtype(ctx, 1))
    if out is None:
        return [None]
    if out not in (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64):
        raise ctx.error(f"the output type {out} is not a float type; give output_dtype when "
                        f"x_scale is {out}.")
    _check_params(ctx, 0, [(1, "x_scale"), (2, "x_zero_point")])
    return [TensorType(out, input_shape(ctx, 0))]


@op("DequantizeLinear", infer=_dequantize_infer, inputs=(2, 3),
    attrs={"axis": Attr.INT(1), "block_size": Attr.INT(0), "output_dtype": Attr.INT(0)})
def dequantize_linear(x, x_scale, x_zero_point=None, *, axis, block_size, output_dtype):
    """y = (x - x_zero_point) * x_scale, in the output type's precision."""
    out = _dequantize_out_dtype(output_dtype, DType.from_numpy(x_scale.dtype))
    scale = _expand_param(x_scale, x.shape, axis, block_size, "x_scale")
    zero_point = _expand_param(x_zero_point, x.shape, axis, block_size, "x_zero_point")
    # Like ONNX Runtime: the difference exactly (int64 / float32), then one
    # product in float32 (float64 for a float64 output) rounded to the output.
    work = np.float64 if out is DType.FLOAT64 else np.float32
    if DType.from_numpy(x.dtype).is_int:
        diff = _wide(x, np.int64)
        if zero_point is not None:
            diff = diff - _wide(zero_point, np.int64)
    else:
        diff = _wide(x, np.float32)
        if zero_point is not None:
            diff = diff - _wide(zero_point, np.float32)
    return np.asarray(diff.astype(work) * _wide(scale, work)).astype(out.np)


def _dynamic_quantize_infer(ctx: InferContext) -> list[Type | None]:
    return [TensorType(DType.UINT8, input_shape(ctx, 0)), TensorType(DType.FLOAT32, ()),
            TensorType(DType.UINT8, ())]


@op("DynamicQuantizeLinear", infer=_dynamic_quantize_infer, inputs=1, outputs=3)
def dynamic_quantize_linear(x):
    """uint8 quantization with a scale and zero point covering [min(x, 0), max(x, 0)]."""
    x = np.asarray(x, dtype=np.float32)
    finite = x[~np.isnan(x)]
    lo = np.float32(min(0.0, finite.min())) if finite.size else np.float32(0)
    hi = np.float32(max(0.0, finite.max())) if finite.size else np.float32(0)
    # An all-zero input has no range; ONNX Runtime then uses a scale of 1.
    scale = np.float32((hi - lo) / np.float32(255)) if hi != lo else np.float32(1)
    zero_point = quantize_values(np.asarray(-lo / scale, np.float32), None, DType.UINT8)
    y = quantize_values(x / scale, zero_point, DType.UINT8)
    return y, np.asarray(scale, np.float32), zero_point


# --------------------------------------------------------------------------
# integer matrix products
# --------------------------------------------------------------------------


def _centered(x: np.ndarray, zero_point: np.ndarray | None, per_row: bool) -> np.ndarray:
    """``x - zero_point`` in float64 (exact for the 8-bit types and float8s).

    A 1-D zero point of ``x`` = A holds one value per row (M), of B one per
    column (N), which broadcasts as is.
    """
    values = _wide(x)
    if zero_point is None:
        return values
    zp = _wide(zero_point)
    if per_row and zp.ndim == 1 and values.ndim >= 2:
        zp = zp.reshape(-1, 1)
    return values - zp


def _wrap_int32(exact: np.ndarray) -> np.ndarray:
    """Exact integer-valued float64 sums wrapped to int32."""
    return np.rint(exact).astype(np.int64).astype(np.int32)


def _matmul_shape(a: Shape | None, b: Shape | None, ctx: InferContext) -> Shape | None:
    """numpy.matmul's result shape (1-D operands promoted, then squeezed)."""
    if a is None or b is None:
        return None
    if not a or not b:
        raise ctx.error("matrix product operands must have rank at least 1, got scalars.")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    k1, k2 = a2[-1], b2[-2]
    if isinstance(k1, int) and isinstance(k2, int) and k1 != k2:
        raise ctx.error(f"the inner dimensions differ: A has shape {list(a)}, B has shape "
                        f"{list(b)}.")
    batch = broadcast_shapes([a2[:-2], b2[:-2]], ctx)
    rows = () if len(a) == 1 else (a2[-2],)
    cols = () if len(b) == 1 else (b2[-1],)
    return (*batch, *rows, *cols)


def _matmul_integer_infer(ctx: InferContext) -> list[Type | None]:
    return [TensorType(DType.INT32, _matmul_shape(input_shape(ctx, 0), input_shape(ctx, 1),
                                                  ctx))]


@op("MatMulInteger", infer=_matmul_integer_infer, inputs=(2, 4))
def matmul_integer(a, b, a_zero_point=None, b_zero_point=None):
    """(A - a_zero_point) @ (B - b_zero_point) accumulated in int32."""
    return _wrap_int32(np.matmul(_centered(a, a_zero_point, True),
                                 _centered(b, b_zero_point, False)))


def _qlinear_matmul_infer(ctx: InferContext) -> list[Type | None]:
    out = input_dtype(ctx, 7)
    shape = _matmul_shape(input_shape(ctx, 0), input_shape(ctx, 3), ctx)
    return [TensorType(out, shape) if out else None]


def _is_int_array(x: np.ndarray) -> bool:
    return DType.from_numpy(x.dtype).is_int


@op("QLinearMatMul", infer=_qlinear_matmul_infer, inputs=8)
def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    """Quantized matmul: requantize (A - za) @ (B - zb) by a_scale * b_scale / y_scale."""
    product = np.matmul(_centered(a, a_zero_point, True), _centered(b, b_zero_point, False))
    if _is_int_array(a) and _is_int_array(b):
        product = _wrap_int32(product)
    a_scale = _wide(a_scale, np.float32)
    if a_scale.ndim == 1 and a.ndim >= 2:
        a_scale = a_scale.reshape(-1, 1)  # one scale per row of A
    multiplier = a_scale * _wide(b_scale, np.float32) / _wide(y_scale, np.float32)
    values = product.astype(np.float32) * multiplier
    return quantize_values(values, y_zero_point, DType.from_numpy(y_zero_point.dtype))


# --------------------------------------------------------------------------
# integer convolution
# --------------------------------------------------------------------------

_CONV_ATTRS = {
    "auto_pad": Attr.STRING("NOTSET"),
    "dilations": Attr.INTS(None),
    "group": Attr.INT(1),
    "kernel_shape": Attr.INTS(None),
    "pads": Attr.INTS(None),
    "strides": Attr.INTS(None),
}


def _conv_layout(spatial: Sequence[Dim], kernel: Sequence[int], *, auto_pad: str,
                 dilations, pads, strides, **_: object
                 ) -> tuple[list[Dim], list[int], list[int], list[int], list[int]]:
    """Output spatial dims, pads (begin, end), strides and dilations of a conv.

    Symbolic input dims give symbolic output dims (and, for SAME padding,
    pads that are only known at run time: returned as 0 placeholders).
    """
    n = len(kernel)
    strides = list(strides) if strides else [1] * n
    dilations = list(dilations) if dilations else [1] * n
    if len(strides) != n or len(dilations) != n:
        raise ValueError(f"strides {strides} and dilations {dilations} must have one value per "
                         f"spatial axis ({n}).")
    if any(s < 1 for s in strides) or any(d < 1 for d in dilations):
        raise ValueError(f"strides {strides} and dilations {dilations} must be positive.")
    if auto_pad in ("NOTSET", ""):
        pads = list(pads) if pads else [0] * (2 * n)
        if len(pads) != 2 * n:
            raise ValueError(f"pads {pads} must have two values per spatial axis ({2 * n}).")
        begin, end = pads[:n], pads[n:]
    elif auto_pad == "VALID":
        begin, end = [0] * n, [0] * n
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
            if not isinstance(size, int):
                begin.append(0)
                end.append(0)
                continue
            total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
    else:
        raise ValueError(f"auto_pad {auto_pad!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER "
                         f"or VALID.")
    out: list[Dim] = []
    for size, k, s, d, b, e in zip(spatial, kernel, strides, dilations, begin, end, strict=True):
        if not isinstance(size, int):
            out.append(unknown_dim())
            continue
        extent = size + b + e - (k - 1) * d - 1
        if extent < 0:
            raise ValueError(f"the kernel (size {k}, dilation {d}) does not fit an input "
                             f"dimension of {size} padded by ({b}, {e}).")
        out.append(extent // s + 1)
    return out, begin, end, strides, dilations


def _conv_infer_shape(ctx: InferContext, x_index: int, w_index: int) -> Shape | None:
    xs, ws = input_shape(ctx, x_index), input_shape(ctx, w_index)
    group = ctx.attrs["group"]
    if xs is None:
        return None
    if len(xs) < 3:
        raise ctx.error(f"the input must have rank 3 or more (N, C, spatial...), got shape "
                        f"{list(xs)}.")
    kernel = ctx.attrs["kernel_shape"] or (tuple(ws[2:]) if ws is not None else None)
    if ws is not None:
        if len(ws) != len(xs):
            raise ctx.error(f"the weights have shape {list(ws)}, of a rank other than the "
                            f"input's {list(xs)}.")
        c, cg = xs[1], ws[1]
        if isinstance(c, int) and isinstance(cg, int) and c != cg * group:
            raise ctx.error(f"the input has {c} channels but the weights of shape {list(ws)} "
                            f"with group {group} expect {cg * group}.")
        if isinstance(ws[0], int) and ws[0] % group:
            raise ctx.error(f"the {ws[0]} output channels do not divide into {group} groups.")
    channels = ws[0] if ws is not None else unknown_dim()
    if kernel is None or not all(isinstance(k, int) for k in kernel):
        return (xs[0], channels, *(unknown_dim() for _ in xs[2:]))
    if len(kernel) != len(xs) - 2:
        raise ctx.error(f"kernel_shape {list(kernel)} does not match the input's "
                        f"{len(xs) - 2} spatial axes.")
    try:
        out, *_ = _conv_layout(xs[2:], kernel, **ctx.attrs)
    except ValueError as error:
        raise ctx.error(str(error)) from None
    return (xs[0], channels, *out)


def _int_conv(x: np.ndarray, w: np.ndarray, attrs: dict) -> np.ndarray:
    """Convolution of centered (zero point subtracted) float64 operands.

    im2col: one strided view per kernel tap gathers every output position's
    inputs, then a single (exact, float64) matrix product per group.
    """
    n, channels, *spatial = x.shape
    m, per_group, *kernel = w.shape
    group = attrs["group"]
    if attrs["kernel_shape"] and list(attrs["kernel_shape"]) != kernel:
        raise ValueError(f"kernel_shape {list(attrs['kernel_shape'])} differs from the weights' "
                         f"spatial shape {kernel}.")
    if channels != per_group * group or m % group:
        raise ValueError(f"the input has {channels} channels, which does not fit weights of "
                         f"shape {list(w.shape)} with group {group}.")
    out, begin, end, strides, dilations = _conv_layout(spatial, kernel, **attrs)
    padded = np.pad(x, [(0, 0), (0, 0), *zip(begin, end, strict=True)])
    taps = list(itertools.product(*(range(k) for k in kernel)))
    windows = [tuple(slice(o * d, o * d + (size - 1) * s + 1, s)
                     for o, d, s, size in zip(offsets, dilations, strides, out, strict=True))
               for offsets in taps]
    weights = w.reshape(group, m // group, per_group * len(taps))
    result = np.empty((n, m, *out), dtype=np.float64)
    # One image at a time bounds the column buffer (channels x taps x positions).
    columns = np.empty((channels, len(taps), *out), dtype=np.float64)
    for b in range(n):
        for t, window in enumerate(windows):
            columns[:, t] = padded[(b, slice(None), *window)]
        grouped = columns.reshape(group, per_group * len(taps), math.prod(out))
        result[b] = np.matmul(weights, grouped).reshape(m, *out)
    return result


def _per_channel(p: np.ndarray | None, rank: int, channels: int | None = None
                 ) -> np.ndarray | None:
    """A scalar or 1-D (per output channel) parameter, shaped for (M, ...) weights."""
    if p is None:
        return None
    p = _wide(p)
    if p.size == 1:
        return p.reshape(())
    if p.ndim != 1:
        raise ValueError(f"a per-channel parameter must be a scalar or 1-D, got shape "
                         f"{list(p.shape)}.")
    if channels is not None and p.size != channels:  # numpy would broadcast the weights
        raise ValueError(f"a per-channel parameter has {p.size} values for {channels} output "
                         "channels.")
    return p.reshape(-1, *([1] * (rank - 1)))


def _conv_integer_infer(ctx: InferContext) -> list[Type | None]:
    return [TensorType(DType.INT32, _conv_infer_shape(ctx, 0, 1))]


@op("ConvInteger", infer=_conv_integer_infer, inputs=(2, 4), attrs=_CONV_ATTRS)
def conv_integer(x, w, x_zero_point=None, w_zero_point=None, **attrs):
    """Convolution of (x - x_zero_point) by (w - w_zero_point) accumulated in int32."""
    x_centered = _centered(x, None if x_zero_point is None else x_zero_point.reshape(()), False)
    w_centered = _wide(w) - (_per_channel(w_zero_point, w.ndim, w.shape[0])
                             if w_zero_point is not None else 0.0)
    return _wrap_int32(_int_conv(x_centered, w_centered, attrs))


def _qlinear_conv_infer(ctx: InferContext) -> list[Type | None]:
    out = input_dtype(ctx, 7)
    return [TensorType(out, _conv_infer_shape(ctx, 0, 3)) if out else None]


@op("QLinearConv", infer=_qlinear_conv_infer, inputs=(8, 9), attrs=_CONV_ATTRS)
def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point,
                 bias=None, **attrs):
    """Quantized convolution: the int32 accumulator (plus the int32 bias) scaled by
    x_scale * w_scale / y_scale (w_scale per output channel or per tensor)."""
    x_centered = _wide(x) - _wide(x_zero_point).reshape(())
    w_centered = _wide(w) - _per_channel(w_zero_point, w.ndim, w.shape[0])
    accumulator = _wrap_int32(_int_conv(x_centered, w_centered, attrs)).astype(np.int64)
    if bias is not None:
        accumulator = accumulator + _wide(bias, np.int64).reshape(-1, *([1] * (w.ndim - 2)))
    accumulator = accumulator.astype(np.int32)  # the sum wraps in 32 bits too
    w_scale = _wide(w_scale, np.float32)
    if w_scale.size > 1:
        if w_scale.size != w.shape[0]:
            raise ValueError(f"w_scale has {w_scale.size} values for {w.shape[0]} output "
                             "channels.")
        w_scale = w_scale.reshape(-1, *([1] * (w.ndim - 2)))
    else:
        w_scale = w_scale.reshape(())
    multiplier = (_wide(x_scale, np.float32).reshape(()) * w_scale
                  / _wide(y_scale, np.float32).reshape(()))
    values = accumulator.astype(np.float32) * multiplier
    return quantize_values(values, y_zero_point.reshape(()), DType.from_numpy(y_zero_point.dtype))
