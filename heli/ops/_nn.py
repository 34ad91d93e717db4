"""Neural-network compute ops: convolutions, pooling, matrix products, Einsum, Dropout.

The padding and output-size arithmetic of the windowed ops (Conv, the pools,
ConvTranspose, Col2Im, DeformConv) lives in a few small public helpers that
the backends reuse when they lower these ops:

* :func:`window_attrs` fills in the defaults of kernel/strides/dilations/pads;
* :func:`effective_kernel` is the extent of a dilated kernel;
* :func:`axis_pads` resolves ``auto_pad`` to explicit pads along one axis;
* :func:`output_size` is the number of windows along one axis (``ceil_mode`` too);
* :func:`resolve_window` does both for every spatial axis;
* :func:`conv_transpose_window` is the same for ConvTranspose.

Pads follow the ONNX layout ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``.

Float32 math stays in float32 and goes through BLAS (``np.matmul``), as ONNX
Runtime's does; float16 and bfloat16 are computed in float32 and rounded once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import Dim, DType, Shape, TensorType, Type
from heli.ops._infer import broadcast_shapes, tensor_input, unknown_dim

AUTO_PAD_MODES = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")

# ---------------------------------------------------------------------------
# Shared window arithmetic (also used by the backends).
# ---------------------------------------------------------------------------


def window_attrs(
    nspatial: int,
    kernel_shape: Sequence[int] | None,
    strides: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``(kernel, strides, dilations, pads)`` with ONNX defaults filled in.

    Strides and dilations default to 1 and pads to 0 along every one of the
    ``nspatial`` axes.  ``kernel_shape`` must be given (take it from the weight
    when the attribute is absent).  Raises ValueError on wrong lengths or
    non-positive kernel sizes, strides or dilations.
    """

    def check(name: str, values: Sequence[int] | None, length: int, default: int,
              minimum: int) -> tuple[int, ...]:
        if values is None:
            return (default,) * length
        values = tuple(int(v) for v in values)
        if len(values) != length:
            raise ValueError(f"{name} {list(values)!r} should have {length} values "
                             f"for {nspatial} spatial axes.")
        if any(v < minimum for v in values):
            raise ValueError(f"{name} {list(values)!r} should all be at least {minimum}.")
        return values

    if kernel_shape is None:
        raise ValueError("the kernel shape is unknown.")
    kernel = check("kernel_shape", kernel_shape, nspatial, 1, 1)
    return (kernel, check("strides", strides, nspatial, 1, 1),
            check("dilations", dilations, nspatial, 1, 1),
            check("pads", pads, 2 * nspatial, 0, 0))


def effective_kernel(kernel: int, dilation: int) -> int:
    """The extent of a kernel of ``kernel`` taps spaced ``dilation`` apart."""
    return (kernel - 1) * dilation + 1


def axis_pads(in_size: int, kernel: int, stride: int, dilation: int,
              pads: tuple[int, int], auto_pad: str) -> tuple[int, int]:
    """``(begin, end)`` padding of one axis once ``auto_pad`` is resolved.

    NOTSET keeps the explicit ``pads``; VALID pads nothing; SAME_UPPER and
    SAME_LOWER pad so that there are ``ceil(in_size / stride)`` windows, the odd
    extra pixel going at the end (UPPER) or at the beginning (LOWER).
    """
    if auto_pad == "NOTSET":
        return pads
    if auto_pad == "VALID":
        return (0, 0)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = -(-in_size // stride)
        total = max(0, (out - 1) * stride + effective_kernel(kernel, dilation) - in_size)
        small = total // 2
        return (small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small)
    raise ValueError(f"auto_pad {auto_pad!r} is not one of {', '.join(AUTO_PAD_MODES)}.")


def output_size(in_size: int, kernel: int, stride: int, dilation: int, pad_begin: int,
                pad_end: int, ceil_mode: bool = False) -> int:
    """The number of windows along one axis of a convolution or pooling.

    ``floor((in + pads - dilated_kernel) / stride) + 1``, or with ``ceil_mode``
    the ceiling, less one when the last window would start in the end padding
    (as PyTorch and ONNX Runtime do).  Raises ValueError when the dilated kernel
    does not fit in the padded input.
    """
    padded = in_size + pad_begin + pad_end
    extent = effective_kernel(kernel, dilation)
    if padded < extent:
        raise ValueError(f"the kernel (extent {extent} with dilation {dilation}) is larger "
                         f"than the padded input (size {padded}).")
    span = padded - extent
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= in_size + pad_begin:
        out -= 1
    return out


def resolve_window(
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
    auto_pad: str = "NOTSET",
    ceil_mode: bool = False,
) -> tuple[list[int], list[int], list[int]]:
    """``(pads_begin, pads_end, output_sizes)`` of a convolution or pooling.

    With ``auto_pad`` other than NOTSET the output size follows the auto_pad
    formula and ``ceil_mode`` does not apply (as the ONNX spec words it).
    """
    n = len(in_sizes)
    begins, ends, outs = [], [], []
    for i in range(n):
        b, e = axis_pads(in_sizes[i], kernel[i], strides[i], dilations[i],
                         (pads[i], pads[i + n]), auto_pad)
        outs.append(output_size(in_sizes[i], kernel[i], strides[i], dilations[i], b, e,
                                ceil_mode and auto_pad == "NOTSET"))
        begins.append(b)
        ends.append(e)
    return begins, ends, outs


def conv_transpose_window(
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
    auto_pad: str = "NOTSET",
    output_padding: Sequence[int] | None = None,
    output_shape: Sequence[int] | None = None,
) -> tuple[list[int], list[int], list[int]]:
    """``(crop_begin, crop_end, output_sizes)`` of a ConvTranspose.

    The full (uncropped) result along axis i has
    ``stride * (in - 1) + output_padding + dilated_kernel`` elements; the output
    is that with ``crop_begin`` elements cut from the start and ``crop_end``
    from the end.  A negative ``crop_end`` means zeros appended at the end
    (an ``output_shape`` larger than the full result).

    With ``output_shape`` (or SAME_* auto_pad, where the output is
    ``in * stride``) the total crop is split as ONNX Runtime does: the odd
    element goes at the end for SAME_UPPER and at the beginning otherwise.
    """
    n = len(in_sizes)
    output_padding = tuple(output_padding) if output_padding else (0,) * n
    if len(output_padding) != n:
        raise ValueError(f"output_padding {list(output_padding)!r} should have {n} values.")
    if output_shape is not None:
        output_shape = tuple(int(v) for v in output_shape)[-n:] if len(output_shape) >= n else None
        if output_shape is None:
            raise ValueError(f"output_shape should have {n} values.")
        if any(v < 0 for v in output_shape):
            raise ValueError(f"output_shape {list(output_shape)!r} has a negative size.")
    begins, ends, outs = [], [], []
    for i in range(n):
        if output_padding[i] >= max(strides[i], dilations[i]):
            raise ValueError(f"output_padding {list(output_padding)!r} should be smaller than "
                             f"the stride or the dilation along each axis.")
        full = (strides[i] * (in_sizes[i] - 1) + output_padding[i]
                + effective_kernel(kernel[i], dilations[i]))
        if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            target = output_shape[i] if output_shape is not None else in_sizes[i] * strides[i]
            total = max(0, full - target)
            small = total // 2
            b = small if auto_pad == "SAME_UPPER" else total - small
            begins.append(b)
            ends.append(full - target - b)
            outs.append(target)
        elif auto_pad == "VALID":
            begins.append(0)
            ends.append(0)
            outs.append(full)
        elif auto_pad == "NOTSET":
            b, e = pads[i], pads[i + n]
            if full - b - e < 0:
                raise ValueError(f"the pads {list(pads)!r} remove more than the whole output.")
            begins.append(b)
            ends.append(e)
            outs.append(full - b - e)
        else:
            raise ValueError(f"auto_pad {auto_pad!r} is not one of {', '.join(AUTO_PAD_MODES)}.")
    return begins, ends, outs


# ---------------------------------------------------------------------------
# Array helpers.
# ---------------------------------------------------------------------------

_SMALL_FLOATS = ("float16", "bfloat16")


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype to do arithmetic in: float32 for float16/bfloat16 and the 8-bit floats."""
    if dtype.kind == "f" and dtype.itemsize >= 4:
        return dtype
    if dtype.kind in "iub":
        return dtype
    return np.dtype(np.float32)


def _accumulate_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype Conv and ConvTranspose accumulate in: float64 for every float
    type, so that each output is rounded once, bias included.

    A float32 product is exact in float64, and a few thousand such terms sum
    far below float32 precision, so the result is (all but always) the
    correctly rounded one: at least as accurate as any float32 kernel (ONNX
    Runtime's use fused multiply-adds).  Float32 accumulation rounds each
    product, each partial sum and the bias add: up to tens of ulps where the
    terms cancel, and the same error on every pixel of a flat background, so
    it adds up coherently through a deep network instead of averaging out.
    """
    cdt = _compute_dtype(dtype)
    return np.dtype(np.float64) if cdt.kind == "f" else cdt


def _pad_spatial(x: np.ndarray, begins: Sequence[int], ends: Sequence[int],
                 value: float = 0) -> np.ndarray:
    """``x`` with its trailing ``len(begins)`` axes padded with ``value``
    (a negative amount crops instead)."""
    n = len(begins)
    lead = x.ndim - n
    crop = tuple(slice(max(0, -b), x.shape[lead + i] - max(0, -e))
                 for i, (b, e) in enumerate(zip(begins, ends, strict=True)))
    x = x[(slice(None),) * lead + crop]
    if all(b <= 0 for b in begins) and all(e <= 0 for e in ends):
        return x
    begins = [max(0, b) for b in begins]
    shape = x.shape[:lead] + tuple(
        s + b + max(0, e) for s, b, e in zip(x.shape[lead:], begins, ends, strict=True))
    out = np.full(shape, value, dtype=x.dtype)
    out[(slice(None),) * lead + tuple(slice(b, b + s) for b, s in zip(begins, x.shape[lead:],
                                                                       strict=True))] = x
    return out


def _tap_slices(kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
                out_sizes: Sequence[int]) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """For each kernel tap (row-major order), the spatial slices of the padded
    input that this tap reads for every output position."""
    for tap in np.ndindex(*kernel):
        yield tap, tuple(slice(t * d, t * d + s * (o - 1) + 1, s)
                         for t, d, s, o in zip(tap, dilations, strides, out_sizes, strict=True))


def _im2col(xp: np.ndarray, kernel: Sequence[int], strides: Sequence[int],
            dilations: Sequence[int], out_sizes: Sequence[int]) -> np.ndarray:
    """Columns of a padded ``(N, C, *spatial)`` input: ``(N, C * prod(kernel),
    prod(out_sizes))``, contiguous, rows ordered (channel, tap) like a flattened
    Conv weight."""
    n, c = xp.shape[:2]
    nsp = len(kernel)
    extents = [effective_kernel(k, d) for k, d in zip(kernel, dilations, strict=True)]
    windows = sliding_window_view(xp, extents, axis=tuple(range(2, 2 + nsp)))
    windows = windows[(slice(None), slice(None))
                      + tuple(slice(0, s * (o - 1) + 1, s) for s, o in zip(strides, out_sizes,
                                                                            strict=True))
                      + tuple(slice(None, None, d) for d in dilations)]
    perm = (0, 1, *range(2 + nsp, 2 + 2 * nsp), *range(2, 2 + nsp))
    return windows.transpose(perm).reshape(n, c * math.prod(kernel), math.prod(out_sizes))


def _col2im(cols: np.ndarray, padded: Sequence[int], strides: Sequence[int],
            dilations: Sequence[int]) -> np.ndarray:
    """Scatter-add columns ``(N, C, *kernel, *blocks)`` into a zero image of
    spatial size ``padded`` (the adjoint of :func:`_im2col`)."""
    nsp = len(padded)
    kernel = cols.shape[2:2 + nsp]
    blocks = cols.shape[2 + nsp:]
    if all(s == k * d and p == s * b for s, k, d, p, b in zip(
            strides, kernel, dilations, padded, blocks, strict=True)) and all(
            d == 1 for d in dilations):
        # Blocks tile the image exactly: one transposing copy instead of adds.
        perm = [0, 1] + [a for i in range(nsp) for a in (2 + nsp + i, 2 + i)]
        return cols.transpose(perm).reshape(cols.shape[:2] + tuple(padded))
    image = np.zeros(cols.shape[:2] + tuple(padded), dtype=cols.dtype)
    for tap, sl in _tap_slices(kernel, strides, dilations, blocks):
        image[(slice(None), slice(None)) + sl] += cols[(slice(None), slice(None)) + tap]
    return image


# Column matrices are built a band of output rows at a time, about this many
# bytes each: big enough for efficient GEMMs, small enough to stay in cache and
# to be recycled by the allocator instead of page-faulted in afresh.
_COLUMN_BUDGET = 4 << 20
_MIN_COLUMNS = 4096


def _conv_columns_matmul(xp: np.ndarray, wmat: np.ndarray, kernel: Sequence[int],
                         strides: Sequence[int], dilations: Sequence[int],
                         out_sizes: Sequence[int]) -> np.ndarray:
    """Grouped convolution of one padded image ``(1, C, *spatial)`` by
    ``wmat`` ``(group, M/group, C/group * prod(kernel))``: ``(M, prod(out))``."""
    group, mg, kg = wmat.shape
    rest = math.prod(out_sizes[1:])
    row_bytes = xp.shape[1] * math.prod(kernel) * rest * xp.itemsize
    band = max(1, _COLUMN_BUDGET // max(row_bytes, 1), -(-_MIN_COLUMNS // max(rest, 1)))
    rows = out_sizes[0]
    if band >= rows:
        cols = _im2col(xp, kernel, strides, dilations, out_sizes)
        return np.matmul(wmat, cols.reshape(group, kg, -1)).reshape(group * mg, -1)
    out = np.empty((group * mg, rows * rest), dtype=wmat.dtype)
    extent = effective_kernel(kernel[0], dilations[0])
    for r0 in range(0, rows, band):
        r1 = min(rows, r0 + band)
        part = xp[:, :, r0 * strides[0]:(r1 - 1) * strides[0] + extent]
        cols = _im2col(part, kernel, strides, dilations, [r1 - r0, *out_sizes[1:]])
        out[:, r0 * rest:r1 * rest] = np.matmul(wmat, cols.reshape(group, kg, -1)).reshape(
            group * mg, -1)
    return out


# Depthwise convolution works on blocks of channels of about this many bytes,
# so that the accumulator stays in cache across the kernel taps.
_DEPTHWISE_BLOCK = 256 << 10


def _depthwise(xp: np.ndarray, w: np.ndarray, strides: Sequence[int],
               dilations: Sequence[int], out_sizes: Sequence[int]) -> np.ndarray:
    """Depthwise convolution (one input channel per group), accumulated tap by
    tap: ``(N, C, *spatial)`` by ``(C * mult, 1, *kernel)``."""
    n, c = xp.shape[:2]
    mult = w.shape[0] // c
    kernel = w.shape[2:]
    nsp = len(kernel)
    taps = w.reshape(c, mult, -1)
    y = np.empty((n, c, mult, *out_sizes), dtype=xp.dtype)
    plane = mult * math.prod(out_sizes) * xp.itemsize
    block = max(1, _DEPTHWISE_BLOCK // max(plane, 1))
    slices = [sl for _, sl in _tap_slices(kernel, strides, dilations, out_sizes)]
    for i in range(n):
        for c0 in range(0, c, block):
            c1 = min(c, c0 + block)
            acc = y[i, c0:c1]
            tmp = np.empty_like(acc)
            for t, sl in enumerate(slices):
                patch = xp[(i, slice(c0, c1)) + sl][:, None]
                weight = taps[c0:c1, :, t].reshape((c1 - c0, mult) + (1,) * nsp)
                if t == 0:
                    np.multiply(patch, weight, out=acc)
                else:
                    np.multiply(patch, weight, out=tmp)
                    acc += tmp
    return y.reshape(n, c * mult, *out_sizes)


# ---------------------------------------------------------------------------
# Type-inference helpers.
# ---------------------------------------------------------------------------


def _spatial_dims(ctx: InferContext, in_dims: Sequence[Dim], kernel: Sequence[int],
                  strides: Sequence[int], dilations: Sequence[int], pads: Sequence[int],
                  auto_pad: str, ceil_mode: bool = False) -> list[Dim]:
    """Output spatial dims of a convolution/pooling; a symbolic input dim stays
    the same symbol when the window keeps the size, else becomes unknown."""
    n = len(in_dims)
    out: list[Dim] = []
    for i, d in enumerate(in_dims):
        if isinstance(d, int):
            try:
                b, e = axis_pads(d, kernel[i], strides[i], dilations[i],
                                 (pads[i], pads[i + n]), auto_pad)
                out.append(output_size(d, kernel[i], strides[i], dilations[i], b, e,
                                       ceil_mode and auto_pad == "NOTSET"))
            except ValueError as error:
                raise ctx.error(f"along spatial axis {i}: {error}") from None
            continue
        extent = effective_kernel(kernel[i], dilations[i])
        keeps = strides[i] == 1 and (
            auto_pad in ("SAME_UPPER", "SAME_LOWER")
            or (auto_pad == "VALID" and extent == 1)
            or (auto_pad == "NOTSET" and pads[i] + pads[i + n] == extent - 1))
        out.append(d if keeps else unknown_dim())
    return out


def _window_attrs(ctx: InferContext, nspatial: int, kernel: Sequence[int] | None):
    try:
        return window_attrs(nspatial, kernel, ctx.attrs.get("strides"),
                            ctx.attrs.get("dilations"), ctx.attrs.get("pads"))
    except ValueError as error:
        raise ctx.error(str(error)) from None


def _rank_of(*shapes: Shape | None) -> int | None:
    for s in shapes:
        if s is not None:
            return len(s)
    return None


def _check_rank(ctx: InferContext, rank: int, what: str = "X") -> None:
    if rank < 3:
        raise ctx.error(f"input {what} has rank {rank}; it needs a batch, a channel and at "
                        f"least one spatial axis.")


def _same_dim(a: Dim, b: Dim) -> bool:
    return not (isinstance(a, int) and isinstance(b, int) and a != b)


def _int_dims(values: Sequence[Dim]) -> tuple[int, ...] | None:
    return tuple(values) if all(isinstance(v, int) for v in values) else None  # type: ignore


# ---------------------------------------------------------------------------
# Conv.
# ---------------------------------------------------------------------------

_CONV_ATTRS = {
    "auto_pad": Attr.STRING("NOTSET"),
    "dilations": Attr.INTS(None),
    "group": Attr.INT(1),
    "kernel_shape": Attr.INTS(None),
    "pads": Attr.INTS(None),
    "strides": Attr.INTS(None),
}


def _checked_group(ctx: InferContext) -> int:
    group = ctx.attrs["group"]
    if group < 1:
        raise ctx.error(f"group {group!r} should be at least 1.")
    return group


def _conv_infer(ctx: InferContext) -> list[Type | None]:
    x, w = tensor_input(ctx, 0), tensor_input(ctx, 1)
    if x is None:
        return [None]
    xs, ws = x.shape, w.shape if w is not None else None
    rank = _rank_of(xs, ws)
    if rank is None:
        return [TensorType(x.dtype, None)]
    _check_rank(ctx, rank)
    if xs is not None and ws is not None and len(xs) != len(ws):
        raise ctx.error(f"input X has rank {len(xs)} but the weight W has rank {len(ws)}.")
    group = _checked_group(ctx)
    if xs is not None and ws is not None and isinstance(ws[1], int) and not _same_dim(
            xs[1], ws[1] * group):
        raise ctx.error(f"input X has {xs[1]} channels but the weight W expects "
                        f"{ws[1]} x group {group} = {ws[1] * group}.")
    if ws is not None and isinstance(ws[0], int) and ws[0] % group:
        raise ctx.error(f"the {ws[0]} output channels do not divide into {group} groups.")
    m = ws[0] if ws is not None else unknown_dim()
    batch = xs[0] if xs is not None else unknown_dim()
    kernel = ctx.attrs["kernel_shape"] or (_int_dims(ws[2:]) if ws is not None else None)
    if xs is None or kernel is None:
        return [TensorType(x.dtype, (batch, m, *(unknown_dim() for _ in range(rank - 2))))]
    kernel, strides, dilations, pads = _window_attrs(ctx, rank - 2, kernel)
    spatial = _spatial_dims(ctx, xs[2:], kernel, strides, dilations, pads, ctx.attrs["auto_pad"])
    return [TensorType(x.dtype, (batch, m, *spatial))]


@op("Conv", infer=_conv_infer, attrs=_CONV_ATTRS, inputs=(2, 3))
def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, auto_pad: str = "NOTSET",
         dilations=None, group: int = 1, kernel_shape=None, pads=None,
         strides=None) -> np.ndarray:
    """N-d convolution (cross-correlation) of ``x`` ``(N, C, *spatial)`` by
    ``w`` ``(M, C/group, *kernel)`` plus an optional bias ``b`` ``(M,)``."""
    nsp = x.ndim - 2
    if nsp < 1 or w.ndim != x.ndim:
        raise ValueError(f"Conv needs X and W of the same rank of at least 3; got shapes "
                         f"{list(x.shape)} and {list(w.shape)}.")
    kernel, strides, dilations, pads = window_attrs(nsp, kernel_shape or w.shape[2:], strides,
                                                    dilations, pads)
    if tuple(kernel) != tuple(w.shape[2:]):
        raise ValueError(f"kernel_shape {list(kernel)} does not match the weight's shape "
                         f"{list(w.shape)}.")
    n, c = x.shape[:2]
    m, cg = w.shape[:2]
    if cg * group != c or m % group:
        raise ValueError(f"input X has {c} channels and W has shape {list(w.shape)}, which do "
                         f"not fit group {group}.")
    begins, ends, out_sizes = resolve_window(x.shape[2:], kernel, strides, dilations, pads,
                                             auto_pad)
    cdt = _accumulate_dtype(x.dtype)
    xc, wc = x.astype(cdt, copy=False), w.astype(cdt, copy=False)
    if min(out_sizes, default=1) == 0 or n == 0 or m == 0:
        y = np.zeros((n, m, *out_sizes), dtype=cdt)
    elif cg == 1 and group > 1:
        y = _depthwise(_pad_spatial(xc, begins, ends), wc, strides, dilations, out_sizes)
    else:
        y = _dense_conv(xc, wc, group, kernel, strides, dilations, begins, ends, out_sizes)
    if b is not None:
        y += b.astype(cdt, copy=False).reshape((m,) + (1,) * nsp)
    return y.astype(x.dtype, copy=False)


def _dense_conv(x: np.ndarray, w: np.ndarray, group: int, kernel: Sequence[int],
                strides: Sequence[int], dilations: Sequence[int], begins: Sequence[int],
                ends: Sequence[int], out_sizes: Sequence[int]) -> np.ndarray:
    """Convolution as im2col + one matmul per group (a plain matmul for 1x1)."""
    n, c = x.shape[:2]
    m = w.shape[0]
    wmat = w.reshape(group, m // group, -1)
    if all(k == 1 for k in kernel) and not any(begins) and not any(ends):
        # A 1x1 convolution is a plain matmul over the (strided) pixels.
        x = x[(slice(None), slice(None)) + tuple(slice(0, s * (o - 1) + 1, s) for s, o in zip(
            strides, out_sizes, strict=True))]
        xm = np.ascontiguousarray(x).reshape(n, group, c // group, -1)
        return np.matmul(wmat, xm).reshape(n, m, *out_sizes)
    xp = _pad_spatial(x, begins, ends)
    y = np.empty((n, m, math.prod(out_sizes)), dtype=x.dtype)
    for i in range(n):  # one image at a time keeps the column matrix small
        y[i] = _conv_columns_matmul(xp[i:i + 1], wmat, kernel, strides, dilations, out_sizes)
    return y.reshape(n, m, *out_sizes)


# ---------------------------------------------------------------------------
# ConvTranspose.
# ---------------------------------------------------------------------------


def _conv_transpose_infer(ctx: InferContext) -> list[Type | None]:
    x, w = tensor_input(ctx, 0), tensor_input(ctx, 1)
    if x is None:
        return [None]
    xs, ws = x.shape, w.shape if w is not None else None
    rank = _rank_of(xs, ws)
    if rank is None:
        return [TensorType(x.dtype, None)]
    _check_rank(ctx, rank)
    group = _checked_group(ctx)
    if xs is not None and ws is not None and not _same_dim(xs[1], ws[0]):
        raise ctx.error(f"input X has {xs[1]} channels but the weight W has {ws[0]} "
                        f"input channels.")
    m: Dim = ws[1] * group if ws is not None and isinstance(ws[1], int) else unknown_dim()
    batch = xs[0] if xs is not None else unknown_dim()
    nsp = rank - 2
    kernel = ctx.attrs["kernel_shape"] or (_int_dims(ws[2:]) if ws is not None else None)
    output_shape = ctx.attrs["output_shape"]
    if output_shape is not None and len(output_shape) < nsp:
        raise ctx.error(f"output_shape {list(output_shape)!r} should have {nsp} values.")
    if xs is None or kernel is None:
        if output_shape is not None and len(output_shape) >= nsp:
            return [TensorType(x.dtype, (batch, m, *output_shape[-nsp:]))]
        return [TensorType(x.dtype, (batch, m, *(unknown_dim() for _ in range(nsp))))]
    kernel, strides, dilations, pads = _window_attrs(ctx, nsp, kernel)
    spatial: list[Dim] = []
    for i, d in enumerate(xs[2:]):
        if isinstance(d, int):
            try:
                _, _, (size,) = conv_transpose_window(
                    [d], [kernel[i]], [strides[i]], [dilations[i]], [pads[i], pads[i + nsp]],
                    ctx.attrs["auto_pad"], _axis(ctx.attrs["output_padding"], i),
                    _axis(output_shape, i - nsp) if output_shape is not None else None)
            except ValueError as error:
                raise ctx.error(f"along spatial axis {i}: {error}") from None
            spatial.append(size)
        elif output_shape is not None:
            spatial.append(int(output_shape[i - nsp]))
        elif strides[i] == 1 and ctx.attrs["auto_pad"] in ("SAME_UPPER", "SAME_LOWER"):
            spatial.append(d)
        else:
            spatial.append(unknown_dim())
    return [TensorType(x.dtype, (batch, m, *spatial))]


def _axis(values: Sequence[int] | None, i: int) -> list[int] | None:
    return None if values is None else [values[i]]


@op("ConvTranspose", inputs=(2, 3), infer=_conv_transpose_infer, attrs={
    **_CONV_ATTRS, "output_padding": Attr.INTS(None), "output_shape": Attr.INTS(None)})
def conv_transpose(x, w, b=None, *, auto_pad, dilations, group, kernel_shape, pads, strides,
                   output_padding, output_shape):
    """Transposed convolution: ``x`` ``(N, C, *spatial)`` by ``w``
    ``(C, M/group, *kernel)``: a matmul per group, then col2im."""
    nsp = x.ndim - 2
    if nsp < 1 or w.ndim != x.ndim:
        raise ValueError(f"ConvTranspose needs X and W of the same rank of at least 3; got "
                         f"shapes {list(x.shape)} and {list(w.shape)}.")
    kernel, strides, dilations, pads = window_attrs(nsp, kernel_shape or w.shape[2:], strides,
                                                    dilations, pads)
    n, c = x.shape[:2]
    if w.shape[0] != c or c % group:
        raise ValueError(f"input X has {c} channels and W has shape {list(w.shape)}, which do "
                         f"not fit group {group}.")
    if tuple(kernel) != tuple(w.shape[2:]):
        raise ValueError(f"kernel_shape {list(kernel)} does not match the weight's shape "
                         f"{list(w.shape)}.")
    mg = w.shape[1]
    m = mg * group
    begins, ends, out_sizes = conv_transpose_window(x.shape[2:], kernel, strides, dilations, pads,
                                                    auto_pad, output_padding, output_shape)
    cdt = _accumulate_dtype(x.dtype)
    xm = x.astype(cdt, copy=False).reshape(n, group, c // group, -1)
    wm = w.astype(cdt, copy=False).reshape(group, c // group, -1).transpose(0, 2, 1)
    cols = np.matmul(wm, xm).reshape(n, m, *kernel, *x.shape[2:])
    full = [s * (i - 1) + effective_kernel(k, d)
            for s, i, k, d in zip(strides, x.shape[2:], kernel, dilations, strict=True)]
    image = _col2im(cols, full, strides, dilations)
    # Crop the pads (a negative crop at the end appends the zeros of output_padding
    # or of a larger output_shape).
    y = _pad_spatial(image, [-v for v in begins],
                     [o + bg - f for o, bg, f in zip(out_sizes, begins, full, strict=True)])
    if b is not None:
        y = y + b.astype(cdt, copy=False).reshape((m,) + (1,) * nsp)
    return np.ascontiguousarray(y).astype(x.dtype, copy=False)


# ---------------------------------------------------------------------------
# Pooling.
# ---------------------------------------------------------------------------

_POOL_ATTRS = {
    "auto_pad": Attr.STRING("NOTSET"),
    "ceil_mode": Attr.INT(0),
    "dilations": Attr.INTS(None),
    "kernel_shape": Attr.INTS(),
    "pads": Attr.INTS(None),
    "strides": Attr.INTS(None),
}


def _pool_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None:
        return [None] * ctx.num_outputs
    if x.shape is None:
        shape = None
    else:
        _check_rank(ctx, len(x.shape))
        kernel, strides, dilations, pads = _window_attrs(ctx, len(x.shape) - 2,
                                                         ctx.attrs["kernel_shape"])
        shape = (*x.shape[:2], *_spatial_dims(ctx, x.shape[2:], kernel, strides, dilations, pads,
                                              ctx.attrs["auto_pad"], bool(ctx.attrs["ceil_mode"])))
    return [TensorType(x.dtype, shape), TensorType(DType.INT64, shape)][:ctx.num_outputs]


class _Pool:
    """The resolved geometry of one pooling call."""

    def __init__(self, x: np.ndarray, kernel_shape, strides, dilations, pads, auto_pad: str,
                 ceil_mode: int) -> None:
        nsp = x.ndim - 2
        if nsp < 1:
            raise ValueError(f"pooling needs an input of rank at least 3; got shape "
                             f"{list(x.shape)}.")
        self.kernel, self.strides, self.dilations, pads = window_attrs(
            nsp, kernel_shape, strides, dilations, pads)
        self.in_sizes = x.shape[2:]
        self.begins, self.ends, self.out_sizes = resolve_window(
            self.in_sizes, self.kernel, self.strides, self.dilations, pads, auto_pad,
            bool(ceil_mode))
        # The end padding the windows actually reach: more than the pads when a
        # ceil_mode window runs past them, less when the last pixels are unused.
        self.reach = [(o - 1) * s + effective_kernel(k, d) - b - i for o, s, k, d, b, i in zip(
            self.out_sizes, self.strides, self.kernel, self.dilations, self.begins,
            self.in_sizes, strict=True)]

    def pad(self, x: np.ndarray, value: float) -> np.ndarray:
        return _pad_spatial(x, self.begins, self.reach, value)

    def taps(self) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...]]]:
        for tap, sl in _tap_slices(self.kernel, self.strides, self.dilations, self.out_sizes):
            yield tap, (slice(None), slice(None)) + sl

    def window_sum(self, xp: np.ndarray) -> np.ndarray:
        """The sum of each window of a padded input, accumulated tap by tap."""
        acc = None
        for _, sl in self.taps():
            if acc is None:
                acc = xp[sl].copy()
            else:
                acc += xp[sl]
        return acc

    def counts(self, include_pad: bool) -> np.ndarray:
        """How many taps of each window fall on the input (and, with
        ``include_pad``, on the explicit pads); shape ``out_sizes``."""
        total = np.ones((), dtype=np.int64)
        for i, (b, e, n) in enumerate(zip(self.begins, self.ends, self.in_sizes, strict=True)):
            valid = np.zeros(b + n + max(self.reach[i], e), dtype=np.int64)
            valid[slice(0, b + n + e) if include_pad else slice(b, b + n)] = 1
            s, d, o = self.strides[i], self.dilations[i], self.out_sizes[i]
            axis = sum(valid[t * d:t * d + s * (o - 1) + 1:s] for t in range(self.kernel[i]))
            total = np.multiply.outer(total, axis)
        return total


def _lowest(dtype: np.dtype):
    if dtype.kind in "iub":
        return np.iinfo(dtype).min if dtype.kind != "b" else False
    return -np.inf


@op("MaxPool", infer=_pool_infer, inputs=1, outputs=(1, 2),
    attrs={**_POOL_ATTRS, "storage_order": Attr.INT(0)})
def max_pool(x, *, auto_pad, ceil_mode, dilations, kernel_shape, pads, storage_order, strides,
             ctx):
    """Max over each window; the optional second output holds the flat index
    (into the unpadded input) of the first maximum of each window."""
    pool = _Pool(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    xp = pool.pad(x, _lowest(x.dtype))
    with_indices = ctx.num_outputs > 1
    y = best = None
    for t, (_, sl) in enumerate(pool.taps()):
        patch = xp[sl]
        if y is None:
            y = patch.copy()
            best = np.zeros(y.shape, dtype=np.int32) if with_indices else None
        elif with_indices:
            better = np.greater(patch, y)  # strict: ties keep the first tap, as ORT does
            np.maximum(y, patch, out=y)
            best += better * (t - best)  # arithmetic select: much faster than masked copies
        else:
            np.maximum(y, patch, out=y)
    if not with_indices:
        return y
    return y, _pool_indices(pool, best, x.shape, storage_order)


def _pool_indices(pool: _Pool, best: np.ndarray, shape: Sequence[int],
                  storage_order: int) -> np.ndarray:
    """Flat input indices of the taps ``best`` (row-major, or column-major
    over the spatial axes with ``storage_order`` 1)."""
    nsp = len(pool.kernel)
    in_sizes = list(shape[2:])
    if storage_order == 0:
        steps = [math.prod(in_sizes[i + 1:]) for i in range(nsp)]
    else:
        steps = [math.prod(in_sizes[:i]) for i in range(nsp)]
    # index = plane start + window start + the chosen tap's offset in the window.
    index = np.arange(shape[0] * shape[1], dtype=np.int64).reshape(
        (shape[0], shape[1]) + (1,) * nsp) * math.prod(in_sizes)
    for i in range(nsp):
        start = np.arange(pool.out_sizes[i], dtype=np.int64) * pool.strides[i] - pool.begins[i]
        index = index + (start * steps[i]).reshape((-1,) + (1,) * (nsp - 1 - i))
    taps = np.indices(pool.kernel).reshape(nsp, -1)
    table = sum(taps[i] * (pool.dilations[i] * steps[i]) for i in range(nsp))
    return index + table.astype(np.int64)[best]


@op("AveragePool", infer=_pool_infer, inputs=1,
    attrs={**_POOL_ATTRS, "count_include_pad": Attr.INT(0)})
def average_pool(x, *, auto_pad, ceil_mode, count_include_pad, dilations, kernel_shape, pads,
                 strides):
    """Mean over each window; pads count in the divisor only with
    ``count_include_pad`` (never the part a ceil_mode window runs past them)."""
    pool = _Pool(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    cdt = _compute_dtype(x.dtype)
    acc = pool.window_sum(pool.pad(x.astype(cdt, copy=False), 0))
    acc /= pool.counts(bool(count_include_pad)).astype(cdt)
    return acc.astype(x.dtype, copy=False)


def _lp_norm_of_sum(acc: np.ndarray, p: int) -> np.ndarray:
    if p == 1:
        return acc
    if p == 2:
        return np.sqrt(acc)
    return np.power(acc, acc.dtype.type(1.0 / p))


def _abs_pow(x: np.ndarray, p: int) -> np.ndarray:
    if p == 2:
        return x * x
    return np.power(np.abs(x), x.dtype.type(p)) if p != 1 else np.abs(x)


@op("LpPool", infer=_pool_infer, inputs=1, attrs={**_POOL_ATTRS, "p": Attr.INT(2)})
def lp_pool(x, *, auto_pad, ceil_mode, dilations, kernel_shape, p, pads, strides):
    """``(sum |x|^p) ^ (1/p)`` over each window (pads are zeros)."""
    if p < 1:
        raise ValueError(f"p {p!r} should be at least 1.")
    pool = _Pool(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    cdt = _compute_dtype(x.dtype)
    acc = pool.window_sum(pool.pad(_abs_pow(x.astype(cdt, copy=False), p), 0))
    return _lp_norm_of_sum(acc, p).astype(x.dtype, copy=False)


def _global_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None:
        return [None]
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    _check_rank(ctx, len(x.shape))
    return [TensorType(x.dtype, (*x.shape[:2], *(1,) * (len(x.shape) - 2)))]


def _spatial_axes(x: np.ndarray) -> tuple[int, ...]:
    if x.ndim < 3:
        raise ValueError(f"global pooling needs an input of rank at least 3; got shape "
                         f"{list(x.shape)}.")
    return tuple(range(2, x.ndim))


@op("GlobalAveragePool", infer=_global_infer, inputs=1)
def global_average_pool(x):
    """Mean over all spatial axes.

    Float32 sums run in the order of ONNX Runtime's (MLAS) kernel: four
    interleaved partial sums, combined as ``(s0 + s2) + (s1 + s3)``, then the
    leftover elements one by one.  Over large planes (a 160x160 feature map
    of a 640x640 OCR input) that order's rounding is visible at rtol 1e-4,
    so any other order would not match ORT.
    """
    axes = _spatial_axes(x)
    cdt = _compute_dtype(x.dtype)
    if cdt != np.float32:
        return np.mean(x, axis=axes, dtype=cdt, keepdims=True).astype(x.dtype)
    return (_four_lane_sum(x.astype(cdt, copy=False).reshape(*x.shape[:2], -1))
            / np.float32(math.prod(x.shape[2:]))).reshape(
        *x.shape[:2], *(1,) * len(axes)).astype(x.dtype, copy=False)


def _four_lane_sum(flat: np.ndarray) -> np.ndarray:
    """Float32 sums over the last axis of ``(N, C, L)`` in MLAS's order."""
    n, c, length = flat.shape
    body = length // 4 * 4
    # (L/4, 4, N*C): a reduction over axis 0 adds row after row, so each lane
    # is a sequential sum, exactly like a SIMD accumulator.
    rows = np.ascontiguousarray(flat[:, :, :body].reshape(n * c, -1, 4).transpose(1, 2, 0))
    lanes = rows.sum(axis=0, dtype=np.float32) if body else np.zeros((4, n * c), np.float32)
    total = (lanes[0] + lanes[2]) + (lanes[1] + lanes[3])
    for j in range(body, length):
        total += flat[:, :, j].reshape(-1)
    return total.reshape(n, c)


@op("GlobalMaxPool", infer=_global_infer, inputs=1)
def global_max_pool(x):
    """Max over all spatial axes."""
    return np.max(x, axis=_spatial_axes(x), keepdims=True)


@op("GlobalLpPool", infer=_global_infer, inputs=1, attrs={"p": Attr.INT(2)})
def global_lp_pool(x, *, p):
    """``(sum |x|^p) ^ (1/p)`` over all spatial axes."""
    if p < 1:
        raise ValueError(f"p {p!r} should be at least 1.")
    cdt = _compute_dtype(x.dtype)
    acc = np.sum(_abs_pow(x.astype(cdt, copy=False), p), axis=_spatial_axes(x), keepdims=True)
    return _lp_norm_of_sum(acc, p).astype(x.dtype, copy=False)


# ---------------------------------------------------------------------------
# MaxUnpool.
# ---------------------------------------------------------------------------

_UNPOOL_ATTRS = {"kernel_shape": Attr.INTS(), "pads": Attr.INTS(None), "strides": Attr.INTS(None)}


def _unpool_default_sizes(in_sizes: Sequence[Dim], kernel, strides, pads) -> list[Dim]:
    n = len(in_sizes)
    return [(d - 1) * strides[i] + kernel[i] - pads[i] - pads[i + n] if isinstance(d, int)
            else unknown_dim() for i, d in enumerate(in_sizes)]


def _max_unpool_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None:
        return [None]
    if ctx.has_input(2):
        shape = ctx.const(2)
        if shape is not None:
            return [TensorType(x.dtype, tuple(int(d) for d in shape))]
        rank = x.rank
        return [TensorType(x.dtype, None if rank is None else tuple(
            unknown_dim() for _ in range(rank)))]
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    _check_rank(ctx, len(x.shape))
    kernel, strides, _, pads = _window_attrs(ctx, len(x.shape) - 2, ctx.attrs["kernel_shape"])
    return [TensorType(x.dtype, (*x.shape[:2], *_unpool_default_sizes(x.shape[2:], kernel,
                                                                      strides, pads)))]


@op("MaxUnpool", infer=_max_unpool_infer, inputs=(2, 3), attrs=_UNPOOL_ATTRS)
def max_unpool(x, indices, output_shape=None, *, kernel_shape, pads, strides):
    """Scatter ``x`` into zeros at the flat ``indices`` of the unpooled tensor
    (``(in - 1) * stride + kernel - pads`` along each axis).  An
    ``output_shape`` replaces the pads: the unpooled tensor is then zero-padded
    at the end of each axis up to it, as the ONNX specification defines."""
    if x.ndim < 3 or indices.shape != x.shape:
        raise ValueError(f"MaxUnpool needs X of rank at least 3 and indices of the same shape; "
                         f"got {list(x.shape)} and {list(indices.shape)}.")
    nsp = x.ndim - 2
    kernel, strides, _, pads = window_attrs(nsp, kernel_shape, strides, None, pads)
    if output_shape is not None:
        pads = (0,) * (2 * nsp)
    sizes = [int(v) for v in _unpool_default_sizes(x.shape[2:], kernel, strides, pads)]
    inferred = (*x.shape[:2], *sizes)
    total = math.prod(inferred)
    flat_index = indices.reshape(-1).astype(np.int64)
    if flat_index.size and (flat_index.min() < 0 or flat_index.max() >= total):
        raise ValueError(f"an index of I is outside the unpooled tensor of shape "
                         f"{list(inferred)} ({total} elements).")
    y = np.zeros(total, dtype=x.dtype)
    y[flat_index] = x.reshape(-1)
    y = y.reshape(inferred)
    if output_shape is None:
        return y
    target = tuple(int(d) for d in np.asarray(output_shape).reshape(-1))
    if len(target) != x.ndim or any(t < s for t, s in zip(target, inferred, strict=True)):
        raise ValueError(f"output_shape {list(target)} should have rank {x.ndim} and be at "
                         f"least the unpooled shape {list(inferred)}.")
    return _pad_spatial(y, [0] * x.ndim, [t - s for t, s in zip(target, inferred, strict=True)])


# ---------------------------------------------------------------------------
# Gemm and MatMul.
# ---------------------------------------------------------------------------


def _gemm_infer(ctx: InferContext) -> list[Type | None]:
    a, b = tensor_input(ctx, 0), tensor_input(ctx, 1)
    if a is None:
        return [None]
    for name, t in (("A", a), ("B", b)):
        if t is not None and t.shape is not None and len(t.shape) != 2:
            raise ctx.error(f"Gemm takes a 2-D {name}; got shape {list(t.shape)}.")
    a_shape = a.shape if a.shape is not None else (unknown_dim(), unknown_dim())
    b_shape = b.shape if b is not None and b.shape is not None else (unknown_dim(), unknown_dim())
    m, k = a_shape[::-1] if ctx.attrs["transA"] else a_shape
    k2, n = b_shape[::-1] if ctx.attrs["transB"] else b_shape
    if not _same_dim(k, k2):
        raise ctx.error(f"the inner dimensions of A {list(a_shape)} and B {list(b_shape)} "
                        f"(after transA/transB) differ: {k} vs {k2}.")
    c = tensor_input(ctx, 2)
    if c is not None and c.shape is not None:
        if len(c.shape) > 2 or not all(
                _same_dim(cd, 1) or _same_dim(cd, od)
                for cd, od in zip(c.shape[::-1], (n, m), strict=False)):
            raise ctx.error(f"C of shape {list(c.shape)} does not broadcast to the result "
                            f"[{m}, {n}].")
    return [TensorType(a.dtype, (m, n))]


@op("Gemm", infer=_gemm_infer, inputs=(2, 3), attrs={
    "alpha": Attr.FLOAT(1.0), "beta": Attr.FLOAT(1.0), "transA": Attr.INT(0),
    "transB": Attr.INT(0)})
def gemm(a, b, c=None, *, alpha, beta, transA, transB):  # noqa: N803 (ONNX names)
    """``alpha * A' @ B' + beta * C`` with A' = A or its transpose (B' alike)."""
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"Gemm takes 2-D A and B; got shapes {list(a.shape)} and "
                         f"{list(b.shape)}.")
    dtype = a.dtype
    cdt = _compute_dtype(dtype)
    a = a.astype(cdt, copy=False)
    b = b.astype(cdt, copy=False)
    y = np.matmul(a.T if transA else a, b.T if transB else b)
    if alpha != 1.0:
        y = _scaled(y, alpha)
    if c is not None and beta != 0.0:
        if np.broadcast_shapes(c.shape, y.shape) != y.shape:
            raise ValueError(f"C of shape {list(c.shape)} does not broadcast to the result "
                             f"{list(y.shape)}.")
        c = c.astype(cdt, copy=False)
        y = y + (_scaled(c, beta) if beta != 1.0 else c)
    return y.astype(dtype, copy=False)


def _scaled(x: np.ndarray, factor: float) -> np.ndarray:
    if x.dtype.kind == "f":
        return x * x.dtype.type(factor)
    return (x * factor).astype(x.dtype)


def matmul_shape(a: Shape, b: Shape) -> Shape:
    """The shape of ``numpy.matmul(a, b)`` over possibly symbolic shapes; a
    ValueError when the inner dimensions or the batch dimensions do not fit."""
    if not a or not b:
        raise ValueError("MatMul operands must have rank at least 1.")
    a2 = (1, *a) if len(a) == 1 else tuple(a)
    b2 = (*b, 1) if len(b) == 1 else tuple(b)
    if not _same_dim(a2[-1], b2[-2]):
        raise ValueError(f"the inner dimensions of shapes {list(a)} and {list(b)} differ: "
                         f"{a2[-1]} vs {b2[-2]}.")
    try:
        batch = broadcast_shapes([a2[:-2], b2[:-2]])
    except Exception:
        raise ValueError(f"the batch dimensions of shapes {list(a)} and {list(b)} do not "
                         f"broadcast.") from None
    return (*batch, *a2[-2:-1][:len(a) - 1], *b2[-1:][:len(b) - 1])


def _matmul_infer(ctx: InferContext) -> list[Type | None]:
    a, b = tensor_input(ctx, 0), tensor_input(ctx, 1)
    if a is None or b is None:
        return [TensorType(a.dtype, None) if a is not None else None]
    if a.shape is None or b.shape is None:
        return [TensorType(a.dtype, None)]
    try:
        return [TensorType(a.dtype, matmul_shape(a.shape, b.shape))]
    except ValueError as error:
        raise ctx.error(str(error)) from None


@op("MatMul", infer=_matmul_infer, inputs=2)
def matmul(a, b):
    """``numpy.matmul``: 1-D operands are promoted and the batch dims broadcast."""
    dtype = a.dtype
    cdt = _compute_dtype(dtype)
    a = a.astype(cdt, copy=False)
    b = b.astype(cdt, copy=False)
    if a.ndim > 2 and b.ndim == 2:
        # One large GEMM instead of one per batch entry.
        y = np.matmul(a.reshape(-1, a.shape[-1]), b).reshape(*a.shape[:-1], b.shape[-1])
    else:
        y = np.matmul(a, b)
    return np.asarray(y).astype(dtype, copy=False)


# ---------------------------------------------------------------------------
# Einsum.
# ---------------------------------------------------------------------------


def parse_einsum(equation: str, ranks: Sequence[int]) -> tuple[list[str], str]:
    """``(input_terms, output_term)`` of an Einsum equation in explicit form.

    Spaces are dropped; an implicit equation gets its output: the ellipsis
    (if any) then the letters used exactly once, in ASCII order.  Each term
    keeps its ``...``.  Raises ValueError on a malformed equation or one that
    does not fit the operands' ``ranks``.
    """
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ValueError(f"the equation {equation!r} has {len(terms)} operand terms but "
                         f"there are {len(ranks)} inputs.")
    for term, rank in zip(terms, ranks, strict=True):
        letters = term.replace("...", "")
        if not all(ch.isalpha() and ch.isascii() for ch in letters) or term.count("...") > 1:
            raise ValueError(f"the term {term!r} of equation {equation!r} is malformed.")
        if len(letters) > rank or ("..." not in term and len(letters) != rank):
            raise ValueError(f"the term {term!r} of equation {equation!r} does not fit an "
                             f"input of rank {rank}.")
    if not arrow:
        counts: dict[str, int] = {}
        for ch in lhs.replace("...", ""):
            if ch != ",":
                counts[ch] = counts.get(ch, 0) + 1
        ellipsis = "..." if "..." in lhs else ""
        rhs = ellipsis + "".join(sorted(ch for ch, k in counts.items() if k == 1))
    letters = rhs.replace("...", "")
    if (not all(ch.isalpha() and ch.isascii() for ch in letters) or rhs.count("...") > 1
            or len(set(letters)) != len(letters)):
        raise ValueError(f"the output term {rhs!r} of equation {equation!r} is malformed.")
    known = set(lhs)
    if any(ch not in known for ch in letters) or ("..." in rhs and "..." not in lhs):
        raise ValueError(f"the output term {rhs!r} of equation {equation!r} uses a label no "
                         f"input has.")
    return terms, rhs


def _einsum_infer(ctx: InferContext) -> list[Type | None]:
    types = [tensor_input(ctx, i) for i in range(len(ctx.input_types))]
    if not types or any(t is None for t in types):
        return [None]
    dtype = types[0].dtype
    if any(t.shape is None for t in types):
        return [TensorType(dtype, None)]
    try:
        terms, rhs = parse_einsum(ctx.attrs["equation"], [len(t.shape) for t in types])
    except ValueError as error:
        raise ctx.error(str(error)) from None
    sizes: dict[str, list[Dim]] = {}
    ellipses: list[Shape] = []
    for term, t in zip(terms, types, strict=True):
        head, _, tail = term.partition("...")
        if "..." not in term:
            head, tail = term, ""
        n_ell = len(t.shape) - len(head) - len(tail)
        ellipses.append(t.shape[len(head):len(head) + n_ell])
        for ch, d in zip(head + tail, t.shape[:len(head)] + t.shape[len(head) + n_ell:],
                         strict=True):
            sizes.setdefault(ch, []).append(d)
    dims = {ch: broadcast_shapes([(d,) for d in ds], ctx)[0] for ch, ds in sizes.items()}
    ell = broadcast_shapes(ellipses, ctx)
    head, _, tail = rhs.partition("...")
    out = [dims[ch] for ch in head]
    if "..." in rhs:
        out += list(ell)
    out += [dims[ch] for ch in tail]
    return [TensorType(dtype, tuple(out))]


@op("Einsum", infer=_einsum_infer, inputs=(1, None), attrs={"equation": Attr.STRING()})
def einsum(*operands, equation):
    """Einstein summation (contractions through BLAS where numpy can)."""
    terms, rhs = parse_einsum(equation, [x.ndim for x in operands])
    dtype = operands[0].dtype
    cdt = _compute_dtype(dtype)
    ops = [x.astype(cdt, copy=False) for x in operands]
    y = np.einsum(f"{','.join(terms)}->{rhs}", *ops, optimize=len(ops) > 1)
    return np.asarray(y).astype(dtype, copy=False)


# ---------------------------------------------------------------------------
# Dropout.
# ---------------------------------------------------------------------------


def _dropout_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None:
        return [None] * ctx.num_outputs
    return [x, TensorType(DType.BOOL, x.shape)][:ctx.num_outputs]


@op("Dropout", infer=_dropout_infer, inputs=(1, 3), outputs=(1, 2),
    attrs={"seed": Attr.INT(None)}, deterministic=False)
def dropout(data, ratio=None, training_mode=None, *, seed, ctx):
    """Identity with an all-true mask, unless ``training_mode`` is true: then
    each element is zeroed with probability ``ratio`` (default 0.5) and the
    rest scaled by ``1 / (1 - ratio)``.  A ``seed`` makes the mask reproducible
    (numpy's legacy RandomState with that seed draws it)."""
    training = training_mode is not None and bool(np.asarray(training_mode).reshape(-1)[0])
    r = 0.5 if ratio is None else float(np.asarray(ratio).reshape(-1)[0])
    if not training or r == 0.0:
        mask = np.ones(data.shape, dtype=bool)
        y = data
    else:
        if not 0.0 <= r < 1.0:
            raise ValueError(f"ratio {r!r} should be in [0, 1).")
        rng = np.random.RandomState(seed) if seed is not None else np.random.RandomState()
        mask = rng.uniform(0.0, 1.0, data.shape) >= r
        cdt = _compute_dtype(data.dtype)
        scaled = data.astype(cdt, copy=False) * cdt.type(1.0 / (1.0 - r))
        y = np.where(mask, scaled, cdt.type(0)).astype(data.dtype, copy=False)
    return (y, mask) if ctx.num_outputs > 1 else y


# ---------------------------------------------------------------------------
# Col2Im.
# ---------------------------------------------------------------------------


def _col2im_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None:
        return [None]
    image, block = ctx.const(1), ctx.const(2)
    if x.shape is not None and len(x.shape) != 3:
        raise ctx.error(f"Col2Im takes a 3-D input [N, C * prod(block), L]; got shape "
                        f"{list(x.shape)}.")
    batch = x.shape[0] if x.shape is not None else unknown_dim()
    channels: Dim = unknown_dim()
    if block is not None and x.shape is not None and isinstance(x.shape[1], int):
        kprod = math.prod(int(v) for v in block.reshape(-1))
        if kprod <= 0 or x.shape[1] % kprod:
            raise ctx.error(f"the input's {x.shape[1]} rows do not divide into blocks of "
                            f"shape {block.tolist()}.")
        channels = x.shape[1] // kprod
    if image is not None:
        spatial: tuple[Dim, ...] = tuple(int(v) for v in image.reshape(-1))
    else:
        t = tensor_input(ctx, 1)
        if t is None or t.shape is None or not isinstance(t.shape[0], int):
            return [TensorType(x.dtype, None)]
        spatial = tuple(unknown_dim() for _ in range(t.shape[0]))
    return [TensorType(x.dtype, (batch, channels, *spatial))]


@op("Col2Im", infer=_col2im_infer, inputs=3, attrs={
    "dilations": Attr.INTS(None), "pads": Attr.INTS(None), "strides": Attr.INTS(None)})
def col2im(x, image_shape, block_shape, *, dilations, pads, strides):
    """Sum column blocks ``[N, C * prod(block), L]`` back into an image
    ``[N, C, *image_shape]`` (PyTorch's fold)."""
    image = [int(v) for v in np.asarray(image_shape).reshape(-1)]
    block = [int(v) for v in np.asarray(block_shape).reshape(-1)]
    if x.ndim != 3 or len(image) != len(block):
        raise ValueError(f"Col2Im needs a 3-D input and image_shape and block_shape of one "
                         f"length; got shapes {list(x.shape)}, {image} and {block}.")
    kernel, strides, dilations, pads = window_attrs(len(block), block, strides, dilations, pads)
    n, rows, length = x.shape
    kprod = math.prod(kernel)
    if rows % kprod:
        raise ValueError(f"the input's {rows} rows do not divide into blocks of shape {block}.")
    nsp = len(block)
    begins, ends = pads[:nsp], pads[nsp:]
    blocks = [output_size(i, k, s, d, b, e)
              for i, k, s, d, b, e in zip(image, kernel, strides, dilations, begins, ends,
                                          strict=True)]
    if math.prod(blocks) != length:
        raise ValueError(f"the input has {length} blocks but image_shape {image} with "
                         f"block_shape {block} makes {math.prod(blocks)}.")
    cdt = _compute_dtype(x.dtype)
    cols = x.astype(cdt, copy=False).reshape(n, rows // kprod, *kernel, *blocks)
    padded = [i + b + e for i, b, e in zip(image, begins, ends, strict=True)]
    y = _pad_spatial(_col2im(cols, padded, strides, dilations), [-b for b in begins],
                     [-e for e in ends])
    return np.ascontiguousarray(y).astype(x.dtype, copy=False)


# ---------------------------------------------------------------------------
# DeformConv.
# ---------------------------------------------------------------------------


def _deform_conv_infer(ctx: InferContext) -> list[Type | None]:
    x, w, offset = tensor_input(ctx, 0), tensor_input(ctx, 1), tensor_input(ctx, 2)
    if x is None:
        return [None]
    xs = x.shape
    ws = w.shape if w is not None else None
    rank = _rank_of(xs, ws)
    if rank is None:
        return [TensorType(x.dtype, None)]
    _check_rank(ctx, rank)
    m = ws[0] if ws is not None else unknown_dim()
    batch = xs[0] if xs is not None else unknown_dim()
    kernel = ctx.attrs["kernel_shape"] or (_int_dims(ws[2:]) if ws is not None else None)
    if xs is not None and kernel is not None:
        kernel, strides, dilations, pads = _window_attrs(ctx, rank - 2, kernel)
        spatial = _spatial_dims(ctx, xs[2:], kernel, strides, dilations, pads, "NOTSET")
    elif offset is not None and offset.shape is not None:
        spatial = list(offset.shape[2:])
    else:
        spatial = [unknown_dim() for _ in range(rank - 2)]
    return [TensorType(x.dtype, (batch, m, *spatial))]


@op("DeformConv", infer=_deform_conv_infer, inputs=(3, 5), attrs={
    "dilations": Attr.INTS(None), "group": Attr.INT(1), "kernel_shape": Attr.INTS(None),
    "offset_group": Attr.INT(1), "pads": Attr.INTS(None), "strides": Attr.INTS(None)})
def deform_conv(x, w, offset, b=None, mask=None, *, dilations, group, kernel_shape,
                offset_group, pads, strides):
    """Deformable convolution: each kernel tap samples the input at its regular
    position plus a learned offset (multilinear interpolation, zero outside),
    optionally scaled by ``mask``; then a grouped matmul as in Conv."""
    nsp = x.ndim - 2
    if nsp < 1 or w.ndim != x.ndim:
        raise ValueError(f"DeformConv needs X and W of the same rank of at least 3; got "
                         f"shapes {list(x.shape)} and {list(w.shape)}.")
    kernel, strides, dilations, pads = window_attrs(nsp, kernel_shape or w.shape[2:], strides,
                                                    dilations, pads)
    n, c = x.shape[:2]
    m, cg = w.shape[:2]
    if cg * group != c or m % group or c % offset_group:
        raise ValueError(f"input X has {c} channels and W has shape {list(w.shape)}, which do "
                         f"not fit group {group} and offset_group {offset_group}.")
    begins, ends, out_sizes = resolve_window(x.shape[2:], kernel, strides, dilations, pads)
    kprod, npix = math.prod(kernel), math.prod(out_sizes)
    expected = (n, offset_group * kprod * nsp, *out_sizes)
    if tuple(offset.shape) != expected:
        raise ValueError(f"offset has shape {list(offset.shape)}; expected {list(expected)}.")
    if mask is not None and tuple(mask.shape) != (n, offset_group * kprod, *out_sizes):
        raise ValueError(f"mask has shape {list(mask.shape)}; expected "
                         f"{[n, offset_group * kprod, *out_sizes]}.")
    cdt = _compute_dtype(x.dtype)
    xg = x.astype(cdt, copy=False).reshape(n, offset_group, c // offset_group, -1)
    off = offset.astype(cdt, copy=False).reshape(n, offset_group, kprod, nsp, npix)
    msk = None if mask is None else mask.astype(cdt, copy=False).reshape(
        n, offset_group, kprod, npix)
    # The regular (undeformed) position of the first tap, per output pixel.
    grids = np.meshgrid(*[np.arange(o, dtype=cdt) * s - bg for o, s, bg in zip(
        out_sizes, strides, begins, strict=True)], indexing="ij")
    base = [g.reshape(-1) for g in grids]
    cols = np.empty((n, offset_group, c // offset_group, kprod, npix), dtype=cdt)
    for t, tap in enumerate(np.ndindex(*kernel)):
        positions = [base[i] + cdt.type(tap[i] * dilations[i]) + off[:, :, t, i]
                     for i in range(nsp)]
        sample = _interpolate(xg, positions, x.shape[2:])
        if msk is not None:
            sample *= msk[:, :, t, None, :]
        cols[:, :, :, t] = sample
    wmat = w.astype(cdt, copy=False).reshape(group, m // group, -1)
    y = np.matmul(wmat, cols.reshape(n, group, cg * kprod, npix)).reshape(n, m, *out_sizes)
    if b is not None:
        y += b.astype(cdt, copy=False).reshape((m,) + (1,) * nsp)
    return y.astype(x.dtype, copy=False)


def _interpolate(xg: np.ndarray, positions: Sequence[np.ndarray],
                 sizes: Sequence[int]) -> np.ndarray:
    """Multilinear samples of ``xg`` ``(N, G, C, prod(sizes))`` at fractional
    ``positions`` (one ``(N, G, P)`` array per spatial axis); corners outside
    the input count as zero.  Returns ``(N, G, C, P)``."""
    lows = [np.floor(p) for p in positions]
    fracs = [p - lo for p, lo in zip(positions, lows, strict=True)]
    lows = [lo.astype(np.int64) for lo in lows]
    steps = [math.prod(sizes[i + 1:]) for i in range(len(sizes))]
    out = np.zeros(xg.shape[:3] + positions[0].shape[-1:], dtype=xg.dtype)
    for corner in np.ndindex(*(2,) * len(sizes)):
        weight = np.ones(positions[0].shape, dtype=xg.dtype)
        flat = np.zeros(positions[0].shape, dtype=np.int64)
        for i, bit in enumerate(corner):
            index = lows[i] + bit
            inside = (index >= 0) & (index < sizes[i])
            weight *= np.where(inside, fracs[i] if bit else 1 - fracs[i], 0)
            flat += np.clip(index, 0, sizes[i] - 1) * steps[i]
        values = np.take_along_axis(xg, flat[:, :, None, :], axis=3)
        out += values * weight[:, :, None, :]
    return out
