"""Shape, data-movement and indexing ops.

Their shape inference decides the shapes of everything downstream, so it is
exact whenever the inputs that shape depends on (a target shape, axes, pads...)
are constants, and it keeps symbolic dimensions where they pass through
unchanged.  When such an input is not constant the rank is still given where
it is known, with fresh unknown dimensions.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

import numpy as np

from heli.ir._limits import check_tensor_size
from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import Dim, DType, Shape, TensorType, Type
from heli.ops._infer import (
    broadcast_shapes,
    input_dtype,
    input_shape,
    normalize_axis,
    same_as_input,
    tensor_input,
    unknown_dim,
)

INT64 = DType.INT64


# -- helpers -------------------------------------------------------------------


def _unknown(rank: int) -> Shape:
    """A shape of ``rank`` fresh unknown dimensions."""
    return tuple(unknown_dim() for _ in range(rank))


def _const_ints(ctx: InferContext, index: int) -> list[int] | None:
    """Input ``index`` as a list of ints when it is a constant, else None."""
    value = ctx.const(index)
    if value is None:
        return None
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _const_scalar(ctx: InferContext, index: int) -> float | int | None:
    value = ctx.const(index)
    if value is None:
        return None
    value = np.asarray(value).reshape(-1)
    if value.size != 1:
        raise ctx.error(f"input {index} must hold exactly one value, not {value.size}.")
    return value[0].item()


def _length_of(ctx: InferContext, index: int) -> int | None:
    """The number of elements of 1-D input ``index`` when that is known."""
    value = ctx.const(index)
    if value is not None:
        return int(np.asarray(value).size)
    shape = input_shape(ctx, index)
    if shape is not None and len(shape) == 1 and isinstance(shape[0], int):
        return shape[0]
    if shape is not None and len(shape) == 0:
        return 1
    return None


def _product(dims: Sequence[Dim]) -> Dim:
    """The product of dims; a symbol survives only when multiplied by ones."""
    ints = [d for d in dims if isinstance(d, int)]
    symbols = [d for d in dims if isinstance(d, str)]
    total = math.prod(ints)
    if not symbols:
        return total
    if total == 0:
        return 0
    if len(symbols) == 1 and total == 1:
        return symbols[0]
    return unknown_dim()


def _axis(axis: int, rank: int, what: str = "axis") -> int:
    """Reference-side axis normalization (a ValueError names the bad axis)."""
    if not -rank <= axis < rank:
        raise ValueError(f"{what} {axis!r} is out of range for a tensor of rank {rank}.")
    return axis % rank if rank else 0


def _axes(axes: Sequence[int], rank: int, ctx: InferContext | None = None) -> list[int]:
    """Normalize ``axes``; rejects out-of-range and repeated axes."""
    result = []
    for a in axes:
        if ctx is not None:
            result.append(normalize_axis(int(a), rank, ctx))
        else:
            result.append(_axis(int(a), rank))
    if len(set(result)) != len(result):
        message = f"the axes {list(axes)!r} repeat an axis."
        if ctx is not None:
            raise ctx.error(message)
        raise ValueError(message[0].upper() + message[1:])
    return result


def _normalize_indices(indices: np.ndarray, size: int, what: str) -> np.ndarray:
    """Negative indices count from the end; out-of-range ones are an error."""
    indices = np.asarray(indices).astype(np.int64, copy=False)
    bad = (indices < -size) | (indices >= size)
    if bad.any():
        value = int(indices[bad].reshape(-1)[0])
        raise IndexError(f"{what} {value} is out of range for a dimension of size {size}.")
    return np.where(indices < 0, indices + size, indices)


def _merge_dim(a: Dim, b: Dim) -> Dim:
    """Two dims that must be equal: the more informative one."""
    return a if isinstance(a, int) else b


# -- Reshape ---------------------------------------------------------------------


def _reshape_dims(ctx: InferContext, in_shape: Shape | None, target: list[int],
                  allowzero: int) -> Shape:
    if target.count(-1) > 1:
        raise ctx.error(f"the shape {target!r} has more than one -1.")
    if any(t < -1 for t in target):
        raise ctx.error(f"the shape {target!r} has a negative dimension other than -1.")
    if allowzero and 0 in target and -1 in target:
        raise ctx.error(f"the shape {target!r} has both 0 and -1 while allowzero is set.")
    out: list[Dim | None] = []
    for i, t in enumerate(target):
        if t == 0 and not allowzero:
            if in_shape is None:
                out.append(unknown_dim())
            elif i >= len(in_shape):
                raise ctx.error(
                    f"the shape {target!r} copies dimension {i} (a 0), but the input "
                    f"has rank {len(in_shape)}."
                )
            else:
                out.append(in_shape[i])
        else:
            out.append(None if t == -1 else t)
    if -1 in target:
        known = [d for d in out if d is not None]
        out[target.index(-1)] = _inferred_dim(ctx, in_shape, known, target)
    elif in_shape is not None and all(isinstance(d, int) for d in (*in_shape, *out)):
        if math.prod(in_shape) != math.prod(out):  # type: ignore[arg-type]
            raise ctx.error(f"cannot reshape a tensor of shape {list(in_shape)!r} to {out!r}.")
    return tuple(out)  # type: ignore[arg-type]


def _inferred_dim(ctx: InferContext, in_shape: Shape | None, known: list[Dim],
                  target: list[int]) -> Dim:
    """The -1 of a Reshape: cancel the known output dims against the input's."""
    if in_shape is None:
        return unknown_dim()
    remaining = collections.Counter(d for d in in_shape if isinstance(d, str))
    for d in known:
        if isinstance(d, str):
            if remaining[d] == 0:
                return unknown_dim()
            remaining[d] -= 1
    symbols = list(remaining.elements())
    in_ints = math.prod(d for d in in_shape if isinstance(d, int))
    out_ints = math.prod(d for d in known if isinstance(d, int))
    if not symbols:
        if out_ints == 0:
            if in_ints == 0:
                raise ctx.error("the -1 of a shape with a 0 cannot be inferred.")
            return unknown_dim()
        if in_ints % out_ints:
            raise ctx.error(f"cannot reshape a tensor of shape {list(in_shape)!r} to "
                            f"{target!r}.")
        return in_ints // out_ints
    if len(symbols) == 1 and in_ints == out_ints:
        return symbols[0]
    return unknown_dim()


def _reshape_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None:
        return [None]
    target = _const_ints(ctx, 1)
    if target is None:
        rank = _length_of(ctx, 1)
        return [TensorType(x.dtype, _unknown(rank) if rank is not None else None)]
    return [TensorType(x.dtype, _reshape_dims(ctx, x.shape, target, ctx.attrs["allowzero"]))]


def _reshape_target(shape_in: tuple[int, ...], target: np.ndarray, allowzero: int) -> list[int]:
    dims = [int(t) for t in np.asarray(target).reshape(-1)]
    if dims.count(-1) > 1 or any(t < -1 for t in dims):
        raise ValueError(f"The shape {dims!r} is not a valid Reshape target.")
    if not allowzero:
        for i, t in enumerate(dims):
            if t == 0:
                if i >= len(shape_in):
                    raise ValueError(f"The shape {dims!r} copies a dimension the input lacks.")
                dims[i] = shape_in[i]
    return dims


@op("Reshape", attrs={"allowzero": Attr.INT(0)}, infer=_reshape_infer, inputs=2)
def reshape(data, shape, *, allowzero):
    """Reshape; 0 copies the input's dimension (unless allowzero), -1 is inferred."""
    dims = _reshape_target(data.shape, shape, allowzero)
    try:
        return data.reshape(dims)
    except ValueError:
        raise ValueError(
            f"Cannot reshape a tensor of shape {list(data.shape)!r} to {dims!r}."
        ) from None


# -- Transpose, Concat, Split ------------------------------------------------------


def _perm(perm: Sequence[int] | None, rank: int) -> list[int]:
    if perm is None:
        return list(range(rank))[::-1]
    perm = [int(p) % rank if -rank <= p < rank else int(p) for p in perm]
    if sorted(perm) != list(range(rank)):
        raise ValueError(f"perm {list(perm)!r} is not a permutation of the {rank} axes.")
    return perm


def _transpose_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None or x.shape is None:
        return [x]
    try:
        perm = _perm(ctx.attrs["perm"], len(x.shape))
    except ValueError as error:
        raise ctx.error(str(error)) from None
    return [TensorType(x.dtype, tuple(x.shape[p] for p in perm))]


@op("Transpose", attrs={"perm": Attr.INTS(None)}, infer=_transpose_infer, inputs=1)
def transpose(data, *, perm):
    """Permute the axes (reverse them when perm is not given)."""
    return np.ascontiguousarray(np.transpose(data, _perm(perm, data.ndim)))


def _concat_infer(ctx: InferContext) -> list[Type | None]:
    types = [tensor_input(ctx, i) for i in range(len(ctx.input_types))]
    if any(t is None for t in types):
        return [None]
    dtype = types[0].dtype
    if any(t.dtype != dtype for t in types):
        raise ctx.error(f"the inputs have different dtypes {[str(t.dtype) for t in types]!r}.")
    shapes = [t.shape for t in types if t.shape is not None]
    if not shapes:
        return [TensorType(dtype, None)]
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        raise ctx.error(f"the inputs have different ranks {[list(s) for s in shapes]!r}.")
    axis = normalize_axis(ctx.attrs["axis"], rank, ctx)
    out: list[Dim] = []
    for a in range(rank):
        dims = [s[a] for s in shapes]
        if a == axis:
            out.append(_concat_dim(dims) if len(shapes) == len(types) else unknown_dim())
            continue
        ints = {d for d in dims if isinstance(d, int)}
        if len(ints) > 1:
            raise ctx.error(
                f"the inputs' shapes {[list(s) for s in shapes]!r} differ on axis {a}, "
                f"which is not the concatenation axis {axis}."
            )
        out.append(ints.pop() if ints else dims[0])
    return [TensorType(dtype, tuple(out))]


def _concat_dim(dims: list[Dim]) -> Dim:
    symbols = [d for d in dims if isinstance(d, str)]
    total = sum(d for d in dims if isinstance(d, int))
    if not symbols:
        return total
    if len(symbols) == 1 and total == 0:
        return symbols[0]
    return unknown_dim()


@op("Concat", attrs={"axis": Attr.INT()}, infer=_concat_infer, inputs=(1, None))
def concat(*inputs, axis):
    """Join the inputs along ``axis``."""
    _axis(axis, inputs[0].ndim)
    return np.concatenate(inputs, axis=axis)


def _split_sizes(dim: int, split: list[int] | None, num_outputs: int | None,
                 count: int) -> list[int]:
    """Sizes of the pieces; ValueError when they cannot fit ``dim``."""
    if split is not None:
        if len(split) != count:
            raise ValueError(f"split {split!r} gives {len(split)} pieces but there are "
                             f"{count} outputs.")
        if any(s < 0 for s in split) or sum(split) != dim:
            raise ValueError(f"split {split!r} does not add up to the dimension {dim}.")
        return split
    pieces = num_outputs if num_outputs is not None else count
    if pieces != count:
        raise ValueError(f"num_outputs is {pieces} but the node has {count} outputs.")
    if pieces < 1:
        raise ValueError(f"num_outputs must be at least 1, not {pieces}.")
    chunk = -(-dim // pieces)  # ceil: every piece but the last has this size
    last = dim - chunk * (pieces - 1)
    if last < 0:
        raise ValueError(f"a dimension of {dim} cannot be split into {pieces} pieces.")
    return [chunk] * (pieces - 1) + [last]


def _split_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    n = ctx.num_outputs
    if x is None:
        return [None] * n
    if x.shape is None:
        return [TensorType(x.dtype, None)] * n
    axis = normalize_axis(ctx.attrs["axis"], len(x.shape), ctx)
    dim = x.shape[axis]
    split = _const_ints(ctx, 1) if ctx.has_input(1) else None
    if ctx.has_input(1) and split is None:
        sizes: list[Dim] = [unknown_dim() for _ in range(n)]
    elif isinstance(dim, int):
        try:
            sizes = list(_split_sizes(dim, split, ctx.attrs["num_outputs"], n))
        except ValueError as error:
            raise ctx.error(str(error)) from None
    elif split is not None:
        if len(split) != n or any(s < 0 for s in split):
            raise ctx.error(f"split {split!r} does not give {n} non-negative sizes.")
        sizes = list(split)
    else:
        sizes = [dim] if n == 1 else [unknown_dim() for _ in range(n)]
    return [TensorType(x.dtype, x.shape[:axis] + (s,) + x.shape[axis + 1:]) for s in sizes]


@op("Split", attrs={"axis": Attr.INT(0), "num_outputs": Attr.INT(None)}, infer=_split_infer,
    inputs=(1, 2), outputs=(1, None))
def split(x, split=None, *, axis, num_outputs, ctx):
    """Split along ``axis`` by the sizes in ``split``, or into equal pieces
    (the last one smaller when the dimension does not divide evenly)."""
    axis = _axis(axis, x.ndim)
    sizes = None if split is None else [int(s) for s in split.reshape(-1)]
    sizes = _split_sizes(x.shape[axis], sizes, num_outputs, ctx.num_outputs)
    bounds = np.cumsum(sizes)[:-1]
    return tuple(np.split(x, bounds, axis=axis))


# -- Slice -----------------------------------------------------------------------


def _slice_range(start: int, end: int, step: int, dim: int) -> tuple[int, int, int]:
    """ONNX's clamping of (start, end) for ``step``; returns (start, end, count)."""
    if step == 0:
        raise ValueError("Slice steps must not be 0.")
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start = min(max(start, 0), dim)
        end = min(max(end, 0), dim)
        count = max(0, -(-(end - start) // step))
    else:
        start = min(max(start, 0), dim - 1)
        end = min(max(end, -1), dim - 1)
        count = max(0, -(-(start - end) // -step))
    return start, end, count


def _slice_args(rank: int, starts, ends, axes, steps) -> list[tuple[int, int, int, int]]:
    """(axis, start, end, step) per sliced axis, validated."""
    starts, ends = list(starts), list(ends)
    if len(starts) != len(ends):
        raise ValueError(f"starts {starts!r} and ends {ends!r} have different lengths.")
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else list(steps)
    if not len(axes) == len(steps) == len(starts):
        raise ValueError(f"axes {axes!r} and steps {steps!r} must have {len(starts)} entries.")
    axes = _axes(axes, rank)
    if any(s == 0 for s in steps):
        raise ValueError(f"Slice steps {steps!r} must not be 0.")
    return list(zip(axes, starts, ends, steps, strict=True))


def _slice_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None or x.shape is None:
        return [x]
    rank = len(x.shape)
    starts, ends = _const_ints(ctx, 1), _const_ints(ctx, 2)
    axes = _const_ints(ctx, 3) if ctx.has_input(3) else None
    steps = _const_ints(ctx, 4) if ctx.has_input(4) else None
    if starts is None or ends is None or (ctx.has_input(4) and steps is None):
        return [TensorType(x.dtype, _slice_unknown(ctx, x.shape))]
    if ctx.has_input(3) and axes is None:
        return [TensorType(x.dtype, _unknown(rank))]
    try:
        args = _slice_args(rank, starts, ends, axes, steps)
    except ValueError as error:
        raise ctx.error(str(error)) from None
    out = list(x.shape)
    for axis, start, end, step in args:
        dim = out[axis]
        if isinstance(dim, int):
            out[axis] = _slice_range(start, end, step, dim)[2]
        elif not _whole_axis(start, end, step):
            out[axis] = unknown_dim()
    return [TensorType(x.dtype, tuple(out))]


def _whole_axis(start: int, end: int, step: int) -> bool:
    """Whether a slice keeps every entry of an axis of any size (so a symbolic
    dimension passes through): [0:big:1] or [-1:-big:-1]."""
    big = 2**31 - 1
    if step == 1:
        return (start == 0 or start <= -big - 1) and end >= big
    if step == -1:
        return (start == -1 or start >= big) and end <= -big - 1
    return False


def _slice_unknown(ctx: InferContext, shape: Shape) -> Shape:
    """Slice with non-constant bounds: unknown dims on the sliced axes only."""
    axes = _const_ints(ctx, 3) if ctx.has_input(3) else None
    if axes is None:
        return _unknown(len(shape))
    sliced = set(_axes(axes, len(shape), ctx))
    return tuple(unknown_dim() if a in sliced else d for a, d in enumerate(shape))


def _ints_of(array) -> list[int] | None:
    return None if array is None else [int(v) for v in np.asarray(array).reshape(-1)]


@op("Slice", infer=_slice_infer, inputs=(3, 5))
def slice_(data, starts, ends, axes=None, steps=None):
    """Strided slice of the given axes; bounds are clamped, steps may be negative."""
    args = _slice_args(data.ndim, _ints_of(starts), _ints_of(ends), _ints_of(axes),
                       _ints_of(steps))
    index = [slice(None)] * data.ndim
    for axis, start, end, step in args:
        start, end, _ = _slice_range(start, end, step, data.shape[axis])
        index[axis] = slice(start, end if end >= 0 else None, step)
    return np.ascontiguousarray(data[tuple(index)])


# -- Gather family -------------------------------------------------------------------


def _gather_infer(ctx: InferContext) -> list[Type | None]:
    x, idx = tensor_input(ctx, 0), tensor_input(ctx, 1)
    if x is None:
        return [None]
    if x.shape is None or idx is None or idx.shape is None:
        return [TensorType(x.dtype, None)]
    axis = normalize_axis(ctx.attrs["axis"], len(x.shape), ctx)
    return [TensorType(x.dtype, x.shape[:axis] + idx.shape + x.shape[axis + 1:])]


@op("Gather", attrs={"axis": Attr.INT(0)}, infer=_gather_infer, inputs=2)
def gather(data, indices, *, axis):
    """Take entries along ``axis``; negative indices count from the end."""
    axis = _axis(axis, data.ndim)
    indices = _normalize_indices(indices, data.shape[axis], f"Gather index on axis {axis}:")
    return np.take(data, indices, axis=axis)


def _gather_elements_infer(ctx: InferContext) -> list[Type | None]:
    x, idx = tensor_input(ctx, 0), tensor_input(ctx, 1)
    if x is None:
        return [None]
    if x.shape is not None and idx is not None and idx.shape is not None:
        if len(x.shape) != len(idx.shape):
            raise ctx.error(f"data has rank {len(x.shape)} but indices rank {len(idx.shape)}.")
        normalize_axis(ctx.attrs["axis"], len(x.shape), ctx)
    return [TensorType(x.dtype, idx.shape if idx is not None else None)]


def _element_index(indices: np.ndarray, axis: int) -> tuple[np.ndarray, ...]:
    """An advanced index addressing ``indices`` along ``axis`` and the position
    of each index along every other axis."""
    grids = list(np.meshgrid(*[np.arange(s) for s in indices.shape], indexing="ij", sparse=True))
    grids[axis] = indices
    return tuple(grids)


def _check_element_shapes(data: np.ndarray, indices: np.ndarray, axis: int, op: str) -> None:
    if indices.ndim != data.ndim:
        raise ValueError(f"{op} data has rank {data.ndim} but indices rank {indices.ndim}.")
    for a, (d, i) in enumerate(zip(data.shape, indices.shape, strict=True)):
        if a != axis and i > d:
            raise ValueError(f"{op} indices shape {list(indices.shape)!r} exceeds the data "
                             f"shape {list(data.shape)!r} on axis {a}.")


@op("GatherElements", attrs={"axis": Attr.INT(0)}, infer=_gather_elements_infer, inputs=2)
def gather_elements(data, indices, *, axis):
    """output[i][j][k] = data[indices[i][j][k]][j][k] (for axis 0)."""
    axis = _axis(axis, data.ndim)
    _check_element_shapes(data, indices, axis, "GatherElements")
    indices = _normalize_indices(indices, data.shape[axis], f"GatherElements index on axis {axis}:")
    return data[_element_index(indices, axis)]


def _gather_nd_infer(ctx: InferContext) -> list[Type | None]:
    x, idx = tensor_input(ctx, 0), tensor_input(ctx, 1)
    if x is None:
        return [None]
    if x.shape is None or idx is None or idx.shape is None or not idx.shape:
        return [TensorType(x.dtype, None)]
    b, k = ctx.attrs["batch_dims"], idx.shape[-1]
    if b < 0:
        raise ctx.error(f"batch_dims {b!r} must not be negative.")
    if not isinstance(k, int):
        return [TensorType(x.dtype, None)]
    if b + k > len(x.shape) or b >= len(idx.shape):
        raise ctx.error(f"indices of shape {list(idx.shape)!r} with batch_dims {b} do not fit "
                        f"data of shape {list(x.shape)!r}.")
    batch = tuple(_merge_dim(d, i) for d, i in zip(x.shape[:b], idx.shape[:b], strict=True))
    return [TensorType(x.dtype, batch + idx.shape[b:-1] + x.shape[b + k:])]


@op("GatherND", attrs={"batch_dims": Attr.INT(0)}, infer=_gather_nd_infer, inputs=2)
def gather_nd(data, indices, *, batch_dims):
    """Gather slices of ``data`` addressed by the last axis of ``indices``."""
    b, k = batch_dims, indices.shape[-1]
    if b < 0 or b + k > data.ndim or data.shape[:b] != indices.shape[:b]:
        raise ValueError(f"GatherND indices of shape {list(indices.shape)!r} with batch_dims "
                         f"{b} do not fit data of shape {list(data.shape)!r}.")
    batch = math.prod(data.shape[:b])
    flat_data = data.reshape((batch,) + data.shape[b:])
    flat_idx = indices.reshape(batch, -1, k).astype(np.int64)
    coords = [_normalize_indices(flat_idx[..., j], data.shape[b + j], "GatherND index")
              for j in range(k)]
    picked = flat_data[(np.arange(batch)[:, None], *coords)]
    return picked.reshape(indices.shape[:-1] + data.shape[b + k:])


# -- Scatter family ------------------------------------------------------------------

_REDUCERS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter(out: np.ndarray, index: tuple, updates: np.ndarray, reduction: str) -> np.ndarray:
    """Write ``updates`` at ``index`` of ``out`` (in place), reducing duplicates."""
    if reduction == "none":
        out[index] = updates
        return out
    reducer = _REDUCERS.get(reduction)
    if reducer is None:
        raise ValueError(f"reduction {reduction!r} is not one of none, add, mul, max, min.")
    if out.dtype == np.bool_ and reduction in ("add", "mul"):
        reducer = np.logical_or if reduction == "add" else np.logical_and
    reducer.at(out, index, updates)
    return out


def _scatter_infer(ctx: InferContext) -> list[Type | None]:
    if ctx.attrs["reduction"] not in ("none", *_REDUCERS):
        raise ctx.error(f"reduction {ctx.attrs['reduction']!r} is not one of none, add, mul, "
                        "max, min.")
    return same_as_input(0)(ctx)


@op("ScatterElements", attrs={"axis": Attr.INT(0), "reduction": Attr.STRING("none")},
    infer=_scatter_infer, inputs=3)
def scatter_elements(data, indices, updates, *, axis, reduction):
    """Copy of data with updates written at indices along ``axis``
    (output[indices[i][j]][j] = updates[i][j] for axis 0), duplicates reduced."""
    axis = _axis(axis, data.ndim)
    _check_element_shapes(data, indices, axis, "ScatterElements")
    if updates.shape != indices.shape:
        raise ValueError(f"ScatterElements updates shape {list(updates.shape)!r} differs from "
                         f"indices shape {list(indices.shape)!r}.")
    indices = _normalize_indices(indices, data.shape[axis],
                                 f"ScatterElements index on axis {axis}:")
    return _scatter(data.copy(), _element_index(indices, axis), updates, reduction)


@op("ScatterND", attrs={"reduction": Attr.STRING("none")}, infer=_scatter_infer, inputs=3)
def scatter_nd(data, indices, updates, *, reduction):
    """Copy of data with slices addressed by the last axis of indices replaced
    by (or reduced with) updates."""
    k = indices.shape[-1]
    expected = indices.shape[:-1] + data.shape[k:]
    if k > data.ndim or updates.shape != expected:
        raise ValueError(f"ScatterND updates of shape {list(updates.shape)!r} do not fit indices "
                         f"of shape {list(indices.shape)!r} into data of shape "
                         f"{list(data.shape)!r}.")
    flat = indices.reshape(-1, k)
    index = tuple(_normalize_indices(flat[:, j], data.shape[j], "ScatterND index")
                  for j in range(k))
    flat_updates = updates.reshape((-1,) + data.shape[k:])
    return _scatter(data.copy(), index, flat_updates, reduction)


def _tensor_scatter_infer(ctx: InferContext) -> list[Type | None]:
    if ctx.attrs["mode"] not in ("linear", "circular"):
        raise ctx.error(f"mode {ctx.attrs['mode']!r} is not 'linear' or 'circular'.")
    cache = tensor_input(ctx, 0)
    if cache is not None and cache.shape is not None:
        if normalize_axis(ctx.attrs["axis"], len(cache.shape), ctx) == 0:
            raise ctx.error("axis must not be 0 (the batch axis).")
    return same_as_input(0)(ctx)


@op("TensorScatter", attrs={"axis": Attr.INT(-2), "mode": Attr.STRING("linear")},
    infer=_tensor_scatter_infer, inputs=(2, 3))
def tensor_scatter(past_cache, update, write_indices=None, *, axis, mode):
    """KV-cache update: write ``update`` into the cache along ``axis`` starting
    at each batch entry's write index (wrapping around in circular mode)."""
    axis = _axis(axis, past_cache.ndim)
    if axis == 0:
        raise ValueError("TensorScatter's axis must not be 0 (the batch axis).")
    batch, capacity, length = past_cache.shape[0], past_cache.shape[axis], update.shape[axis]
    starts = (np.zeros(batch, np.int64) if write_indices is None
              else np.asarray(write_indices, np.int64).reshape(-1))
    positions = starts[:, None] + np.arange(length)
    if mode == "circular":
        positions %= capacity
    elif (positions >= capacity).any() or (starts < 0).any():
        raise IndexError(f"TensorScatter writes {length} entries at indices {starts.tolist()!r} "
                         f"past the cache length {capacity}.")
    out = past_cache.copy()
    # With the sequence axis next to the batch axis, one advanced index writes all.
    view = np.moveaxis(out, axis, 1)
    view[np.arange(batch)[:, None], positions] = np.moveaxis(update, axis, 1)
    return out


# -- Expand, Squeeze, Unsqueeze, Flatten -------------------------------------------------


def _expand_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None:
        return [None]
    target = _const_ints(ctx, 1)
    if target is None:
        rank = _length_of(ctx, 1)
        if rank is None or x.shape is None:
            return [TensorType(x.dtype, None)]
        out_rank = max(rank, len(x.shape))
        padded = (1,) * (out_rank - len(x.shape)) + x.shape
        # An input dim above 1 fixes the output dim; anything else may grow.
        dims = tuple(d if isinstance(d, int) and d > 1 else unknown_dim() for d in padded)
        return [TensorType(x.dtype, dims)]
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    return [TensorType(x.dtype, broadcast_shapes([x.shape, tuple(target)], ctx))]


@op("Expand", infer=_expand_infer, inputs=2)
def expand(x, shape):
    """Broadcast ``x`` to ``shape`` (numpy broadcasting both ways)."""
    target = [int(s) for s in shape.reshape(-1)]
    try:
        out_shape = np.broadcast_shapes(x.shape, tuple(target))
    except (ValueError, RuntimeError):  # RuntimeError: more than 32 dimensions
        raise ValueError(
            f"Cannot expand a tensor of shape {list(x.shape)!r} to {target!r}."
        ) from None
    check_tensor_size(out_shape, x.dtype)
    return np.array(np.broadcast_to(x, out_shape))


def _squeeze_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None or x.shape is None:
        return [x]
    if not ctx.has_input(1):
        if any(isinstance(d, str) for d in x.shape):
            return [TensorType(x.dtype, None)]  # which symbols are 1 is unknown
        return [TensorType(x.dtype, tuple(d for d in x.shape if d != 1))]
    axes = _const_ints(ctx, 1)
    if axes is None:
        n = _length_of(ctx, 1)
        return [TensorType(x.dtype, _unknown(len(x.shape) - n) if n is not None else None)]
    axes = _axes(axes, len(x.shape), ctx)
    for a in axes:
        if isinstance(x.shape[a], int) and x.shape[a] != 1:
            raise ctx.error(f"cannot squeeze axis {a} of size {x.shape[a]} (it must be 1).")
    return [TensorType(x.dtype, tuple(d for a, d in enumerate(x.shape) if a not in axes))]


@op("Squeeze", infer=_squeeze_infer, inputs=(1, 2))
def squeeze(data, axes=None):
    """Remove the given axes of size 1 (all of them when axes is not given)."""
    if axes is None:
        return np.squeeze(data)
    axes = _axes(_ints_of(axes), data.ndim)
    for a in axes:
        if data.shape[a] != 1:
            raise ValueError(f"Cannot squeeze axis {a} of size {data.shape[a]} (it must be 1).")
    return np.squeeze(data, axis=tuple(axes))


def _unsqueeze_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None or x.shape is None:
        return [x]
    axes = _const_ints(ctx, 1)
    if axes is None:
        n = _length_of(ctx, 1)
        return [TensorType(x.dtype, _unknown(len(x.shape) + n) if n is not None else None)]
    out_rank = len(x.shape) + len(axes)
    axes = _axes(axes, out_rank, ctx)
    rest = iter(x.shape)
    return [TensorType(x.dtype, tuple(1 if a in axes else next(rest) for a in range(out_rank)))]


@op("Unsqueeze", infer=_unsqueeze_infer, inputs=2)
def unsqueeze(data, axes):
    """Insert axes of size 1 at the given positions of the output."""
    axes = _ints_of(axes)
    axes = _axes(axes, data.ndim + len(axes))
    return np.expand_dims(data, tuple(axes))


def _flatten_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None:
        return [None]
    if x.shape is None:
        return [TensorType(x.dtype, _unknown(2))]
    rank, axis = len(x.shape), ctx.attrs["axis"]
    if not -rank <= axis <= rank:
        raise ctx.error(f"axis {axis!r} is out of range for a tensor of rank {rank}.")
    if axis < 0:
        axis += rank
    return [TensorType(x.dtype, (_product(x.shape[:axis]), _product(x.shape[axis:])))]


@op("Flatten", attrs={"axis": Attr.INT(1)}, infer=_flatten_infer, inputs=1)
def flatten(x, *, axis):
    """2-D view: the axes before ``axis`` become rows, the rest columns."""
    if not -x.ndim <= axis <= x.ndim:
        raise ValueError(f"axis {axis!r} is out of range for a tensor of rank {x.ndim}.")
    if axis < 0:
        axis += x.ndim
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


# -- Pad, CenterCropPad -----------------------------------------------------------------

_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad_axes(rank: int, pads: list[int], axes: list[int] | None) -> list[tuple[int, int, int]]:
    """(axis, before, after) per padded axis."""
    axes = list(range(rank)) if axes is None else _axes(axes, rank)
    if len(pads) != 2 * len(axes):
        raise ValueError(f"pads {pads!r} must have {2 * len(axes)} entries (2 per axis).")
    n = len(axes)
    return [(a, pads[i], pads[i + n]) for i, a in enumerate(axes)]


def _pad_infer(ctx: InferContext) -> list[Type | None]:
    if ctx.attrs["mode"] not in _PAD_MODES:
        raise ctx.error(f"mode {ctx.attrs['mode']!r} is not one of {list(_PAD_MODES)!r}.")
    x = tensor_input(ctx, 0)
    if x is None or x.shape is None:
        return [x]
    rank = len(x.shape)
    pads = _const_ints(ctx, 1)
    axes = _const_ints(ctx, 3) if ctx.has_input(3) else None
    if pads is None or (ctx.has_input(3) and axes is None):
        if axes is not None:
            padded = set(_axes(axes, rank, ctx))
            return [TensorType(x.dtype, tuple(unknown_dim() if a in padded else d
                                              for a, d in enumerate(x.shape)))]
        return [TensorType(x.dtype, _unknown(rank))]
    try:
        spec = _pad_axes(rank, pads, axes)
    except ValueError as error:
        raise ctx.error(str(error)) from None
    out = list(x.shape)
    for a, before, after in spec:
        if isinstance(out[a], int):
            out[a] = out[a] + before + after
            if out[a] < 0:
                raise ctx.error(f"pads {pads!r} remove more than axis {a}'s {x.shape[a]} entries.")
        elif before or after:
            out[a] = unknown_dim()
    return [TensorType(x.dtype, tuple(out))]


@op("Pad", attrs={"mode": Attr.STRING("constant")}, infer=_pad_infer, inputs=(2, 4))
def pad(data, pads, constant_value=None, axes=None, *, mode):
    """Pad (or, with negative pads, crop) each axis at both ends."""
    if mode not in _PAD_MODES:
        raise ValueError(f"Pad mode {mode!r} is not one of {list(_PAD_MODES)!r}.")
    spec = _pad_axes(data.ndim, _ints_of(pads), _ints_of(axes))
    # Negative pads crop first; the remaining (non-negative) pads then pad the crop.
    crop = [slice(None)] * data.ndim
    widths = [(0, 0)] * data.ndim
    for a, before, after in spec:
        if data.shape[a] + min(before, 0) + min(after, 0) < 0:
            raise ValueError(f"pads {before}, {after} remove more than axis {a}'s "
                             f"{data.shape[a]} entries.")
        crop[a] = slice(-min(before, 0), data.shape[a] - -min(after, 0))
        widths[a] = (max(before, 0), max(after, 0))
    data = data[tuple(crop)]
    check_tensor_size([d + sum(w) for d, w in zip(data.shape, widths, strict=True)], data.dtype)
    if mode == "constant":
        value = 0 if constant_value is None else np.asarray(constant_value).reshape(-1)[0]
        return np.pad(data, widths, mode="constant", constant_values=value)
    if any(data.shape[a] == 0 for a, pair in enumerate(widths) if any(pair)):
        raise ValueError(f"Pad mode {mode!r} cannot pad an empty axis.")
    return np.pad(data, widths, mode=mode)


def _center_crop_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None or x.shape is None:
        return [x]
    rank = len(x.shape)
    axes = _axes(ctx.attrs["axes"] if ctx.attrs["axes"] is not None else range(rank), rank, ctx)
    target = _const_ints(ctx, 1)
    if target is None:
        return [TensorType(x.dtype, tuple(unknown_dim() if a in axes else d
                                          for a, d in enumerate(x.shape)))]
    if len(target) != len(axes):
        raise ctx.error(f"shape {target!r} must have one entry per axis {axes!r}.")
    out = list(x.shape)
    for a, t in zip(axes, target, strict=True):
        out[a] = t
    return [TensorType(x.dtype, tuple(out))]


@op("CenterCropPad", attrs={"axes": Attr.INTS(None)}, infer=_center_crop_infer, inputs=2)
def center_crop_pad(input_data, shape, *, axes):
    """Crop or zero-pad the given axes to ``shape``, keeping the content centred
    (an odd crop drops the extra entry at the end, an odd pad adds it there)."""
    rank = input_data.ndim
    axes = _axes(range(rank) if axes is None else axes, rank)
    target = _ints_of(shape)
    if len(target) != len(axes):
        raise ValueError(f"CenterCropPad shape {target!r} must have one entry per axis.")
    out_shape = list(input_data.shape)
    src = [slice(None)] * rank
    dst = [slice(None)] * rank
    for a, t in zip(axes, target, strict=True):
        dim = input_data.shape[a]
        if t < 0:
            raise ValueError(f"CenterCropPad shape {target!r} has a negative entry.")
        out_shape[a] = t
        if t <= dim:
            begin = (dim - t) // 2
            src[a] = slice(begin, begin + t)
        else:
            begin = (t - dim) // 2
            dst[a] = slice(begin, begin + dim)
    check_tensor_size(out_shape, input_data.dtype)
    out = np.zeros(out_shape, dtype=input_data.dtype)
    out[tuple(dst)] = input_data[tuple(src)]
    return out


# -- Shape, Size, Range, Tile, ConstantOfShape, EyeLike -------------------------------------


def _shape_bounds(rank: int, start: int, end: int | None) -> tuple[int, int]:
    end = rank if end is None else end
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return start, max(start, end)


def _shape_infer(ctx: InferContext) -> list[Type | None]:
    shape = input_shape(ctx, 0)
    if shape is None:
        return [TensorType(INT64, _unknown(1))]
    start, end = _shape_bounds(len(shape), ctx.attrs["start"], ctx.attrs["end"])
    return [TensorType(INT64, (end - start,))]


@op("Shape", attrs={"start": Attr.INT(0), "end": Attr.INT(None)}, infer=_shape_infer, inputs=1)
def shape(data, *, start, end):
    """The input's shape (dimensions start..end, clamped) as int64."""
    start, end = _shape_bounds(data.ndim, start, end)
    return np.array(data.shape[start:end], dtype=np.int64)


@op("Size", infer=lambda ctx: [TensorType(INT64, ())], inputs=1)
def size(data):
    """The input's number of elements as an int64 scalar."""
    return np.array(data.size, dtype=np.int64)


def _range_infer(ctx: InferContext) -> list[Type | None]:
    dtype = input_dtype(ctx, 0)
    if dtype is None:
        return [None]
    values = [_const_scalar(ctx, i) for i in range(3)]
    if any(v is None for v in values):
        return [TensorType(dtype, _unknown(1))]
    try:
        return [TensorType(dtype, (_range_count(*values),))]
    except ValueError as error:
        raise ctx.error(str(error)) from None


def _range_count(start, limit, delta) -> int:
    if delta == 0:
        raise ValueError("Range's delta must not be 0.")
    if isinstance(start, int) and isinstance(limit, int) and isinstance(delta, int):
        return max(-(-(limit - start) // delta), 0)
    if not all(math.isfinite(float(v)) for v in (start, limit, delta)):
        raise ValueError(f"Range's start {start!r}, limit {limit!r} and delta {delta!r} must "
                         "be finite numbers.")
    return max(math.ceil((float(limit) - float(start)) / float(delta)), 0)


@op("Range", attrs={"stash_type": Attr.INT(1)}, infer=_range_infer, inputs=3)
def range_(start, limit, delta, *, stash_type):
    """start, start + delta, ... up to ``limit`` (exclusive)."""
    dtype = start.dtype
    values = [np.asarray(v).reshape(-1)[0].item() for v in (start, limit, delta)]
    if dtype.kind in "iu":
        values = [int(v) for v in values]
    count = _range_count(*values)
    check_tensor_size([count], dtype)
    if dtype.kind in "iu":
        return np.arange(count, dtype=np.int64).astype(dtype) * dtype.type(values[2]) + start
    # float16/bfloat16 compute in float32 unless stash_type asks otherwise.
    compute = dtype
    if dtype.itemsize < 4 and stash_type == DType.FLOAT32.onnx:
        compute = np.dtype(np.float32)
    first, step = (np.asarray(v).astype(compute) for v in (start, delta))
    out = first.reshape(()) + np.arange(count).astype(compute) * step.reshape(())
    return out.astype(dtype)


def _tile_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None or x.shape is None:
        return [x]
    repeats = _const_ints(ctx, 1)
    if repeats is None:
        return [TensorType(x.dtype, _unknown(len(x.shape)))]
    if len(repeats) != len(x.shape) or any(r < 0 for r in repeats):
        raise ctx.error(f"repeats {repeats!r} must be {len(x.shape)} non-negative numbers.")
    out = tuple(d * r if isinstance(d, int) else (d if r == 1 else unknown_dim())
                for d, r in zip(x.shape, repeats, strict=True))
    return [TensorType(x.dtype, out)]


@op("Tile", infer=_tile_infer, inputs=2)
def tile(x, repeats):
    """Repeat the tensor ``repeats[i]`` times along each axis i."""
    reps = _ints_of(repeats)
    if len(reps) != x.ndim or any(r < 0 for r in reps):
        raise ValueError(f"Tile repeats {reps!r} must be {x.ndim} non-negative numbers.")
    check_tensor_size([d * r for d, r in zip(x.shape, reps, strict=True)], x.dtype)
    return np.tile(x, reps)


def _fill_value(value) -> np.ndarray:
    if value is None:
        return np.zeros((), np.float32)
    value = np.asarray(value).reshape(-1)
    if value.size != 1:
        raise ValueError(f"ConstantOfShape's value must hold one element, not {value.size}.")
    return value[0]


def _constant_of_shape_infer(ctx: InferContext) -> list[Type | None]:
    try:
        dtype = DType.from_numpy(np.asarray(_fill_value(ctx.attrs["value"])).dtype)
    except ValueError as error:
        raise ctx.error(str(error)) from None
    dims = _const_ints(ctx, 0)
    if dims is not None:
        if any(d < 0 for d in dims):
            raise ctx.error(f"the shape {dims!r} has a negative dimension.")
        return [TensorType(dtype, tuple(dims))]
    rank = _length_of(ctx, 0)
    return [TensorType(dtype, _unknown(rank) if rank is not None else None)]


@op("ConstantOfShape", attrs={"value": Attr.TENSOR(None)}, infer=_constant_of_shape_infer,
    inputs=1)
def constant_of_shape(input, *, value):
    """A tensor of the given shape filled with ``value`` (float32 0 by default)."""
    fill = np.asarray(_fill_value(value))
    dims = _ints_of(input)
    if any(d < 0 for d in dims):
        raise ValueError(f"ConstantOfShape's shape {dims!r} has a negative dimension.")
    check_tensor_size(dims, fill.dtype)
    return np.full(dims, fill, dtype=fill.dtype)


def _eye_like_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None:
        return [None]
    dtype = DType.from_onnx(ctx.attrs["dtype"]) if ctx.attrs["dtype"] is not None else x.dtype
    if x.shape is not None and len(x.shape) != 2:
        raise ctx.error(f"the input must be 2-D, not of shape {list(x.shape)!r}.")
    return [TensorType(dtype, x.shape if x.shape is not None else _unknown(2))]


@op("EyeLike", attrs={"dtype": Attr.INT(None), "k": Attr.INT(0)}, infer=_eye_like_infer,
    inputs=1)
def eye_like(input, *, dtype, k):
    """A 2-D tensor like the input with ones on diagonal ``k``, zeros elsewhere."""
    if input.ndim != 2:
        raise ValueError(f"EyeLike's input must be 2-D, not of shape {list(input.shape)!r}.")
    out_dtype = DType.from_onnx(dtype).np if dtype is not None else input.dtype
    return np.eye(input.shape[0], input.shape[1], k=k, dtype=out_dtype)


# -- Compress, NonZero, OneHot, Trilu ---------------------------------------------------------


def _compress_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None:
        return [None]
    cond = ctx.const(1)
    count: Dim = int(np.count_nonzero(cond)) if cond is not None else unknown_dim()
    axis = ctx.attrs["axis"]
    if axis is None:
        return [TensorType(x.dtype, (count,))]
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    axis = normalize_axis(axis, len(x.shape), ctx)
    return [TensorType(x.dtype, x.shape[:axis] + (count,) + x.shape[axis + 1:])]


@op("Compress", attrs={"axis": Attr.INT(None)}, infer=_compress_infer, inputs=2)
def compress(input, condition, *, axis):
    """The slices along ``axis`` (elements of the flattened input when no axis)
    whose condition is true; a short condition drops the slices past its end."""
    condition = np.asarray(condition).reshape(-1).astype(bool)
    if axis is None:
        input = input.reshape(-1)
        axis = 0
    axis = _axis(axis, input.ndim)
    dim = input.shape[axis]
    if condition.size > dim:
        if condition[dim:].any():
            extra = int(np.argmax(condition[dim:])) + dim
            raise IndexError(f"Compress's condition selects entry {extra} of an axis of "
                             f"size {dim}.")
        condition = condition[:dim]
    return np.compress(condition, input, axis=axis)


def _nonzero_infer(ctx: InferContext) -> list[Type | None]:
    shape = input_shape(ctx, 0)
    rank: Dim = max(len(shape), 1) if shape is not None else unknown_dim()
    return [TensorType(INT64, (rank, unknown_dim()))]


@op("NonZero", infer=_nonzero_infer, inputs=1)
def nonzero(x):
    """Indices of the non-zero entries, one column per entry (row-major order)."""
    return np.array(np.nonzero(np.atleast_1d(x)), dtype=np.int64)


def _onehot_infer(ctx: InferContext) -> list[Type | None]:
    idx, values = tensor_input(ctx, 0), tensor_input(ctx, 2)
    if values is None:
        return [None]
    if idx is None or idx.shape is None:
        return [TensorType(values.dtype, None)]
    rank = len(idx.shape)
    axis = ctx.attrs["axis"]
    if not -rank - 1 <= axis <= rank:
        raise ctx.error(f"axis {axis!r} is out of range for an output of rank {rank + 1}.")
    axis %= rank + 1
    depth = _const_scalar(ctx, 1)
    dim: Dim = int(depth) if depth is not None else unknown_dim()
    return [TensorType(values.dtype, idx.shape[:axis] + (dim,) + idx.shape[axis:])]


@op("OneHot", attrs={"axis": Attr.INT(-1)}, infer=_onehot_infer, inputs=3)
def one_hot(indices, depth, values, *, axis):
    """on_value where an index hits a position of the new axis, off_value
    elsewhere; indices in [-depth, -1] count from the end, others are all off."""
    depth = int(np.asarray(depth).reshape(-1)[0])
    if depth < 1:
        raise ValueError(f"OneHot's depth must be positive, not {depth}.")
    values = np.asarray(values).reshape(-1)
    if values.size != 2:
        raise ValueError(f"OneHot's values must be [off_value, on_value], not {values.size} "
                         "values.")
    rank = indices.ndim
    if not -rank - 1 <= axis <= rank:
        raise ValueError(f"axis {axis!r} is out of range for an output of rank {rank + 1}.")
    check_tensor_size([*indices.shape, depth], values.dtype)
    idx = np.asarray(indices).astype(np.int64)
    idx = np.where(idx < 0, idx + depth, idx)
    hot = idx[..., None] == np.arange(depth)
    out = np.where(hot, values[1], values[0]).astype(values.dtype)
    return np.moveaxis(out, -1, axis % (rank + 1))


def _trilu_infer(ctx: InferContext) -> list[Type | None]:
    shape = input_shape(ctx, 0)
    if shape is not None and len(shape) < 2:
        raise ctx.error(f"the input must have rank 2 or more, not {len(shape)}.")
    return same_as_input(0)(ctx)


@op("Trilu", attrs={"upper": Attr.INT(1)}, infer=_trilu_infer, inputs=(1, 2))
def trilu(input, k=None, *, upper):
    """Keep the upper (or lower) triangle of the last two axes from diagonal k."""
    if input.ndim < 2:
        raise ValueError(f"Trilu's input must have rank 2 or more, not {input.ndim}.")
    k = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    return np.triu(input, k) if upper else np.tril(input, k)


# -- TopK, Unique -----------------------------------------------------------------------


def _topk_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None:
        return [None, None]
    if x.shape is None:
        return [TensorType(x.dtype, None), TensorType(INT64, None)]
    axis = normalize_axis(ctx.attrs["axis"], len(x.shape), ctx)
    k = _const_scalar(ctx, 1)
    if k is not None:
        dim = x.shape[axis]
        if k < 0 or (isinstance(dim, int) and k > dim):
            raise ctx.error(f"K {k!r} is out of range for an axis of size {dim}.")
    kdim: Dim = int(k) if k is not None else unknown_dim()
    shape = x.shape[:axis] + (kdim,) + x.shape[axis + 1:]
    return [TensorType(x.dtype, shape), TensorType(INT64, shape)]


@op("TopK", attrs={"axis": Attr.INT(-1), "largest": Attr.INT(1), "sorted": Attr.INT(1)},
    infer=_topk_infer, inputs=2, outputs=2)
def top_k(x, k, *, axis, largest, sorted):
    """The K largest (or smallest) entries along ``axis`` and their indices;
    equal values come out lower index first."""
    axis = _axis(axis, x.ndim)
    k = int(np.asarray(k).reshape(-1)[0])
    n = x.shape[axis]
    if not 0 <= k <= n:
        raise ValueError(f"TopK's K {k} is out of range for an axis of size {n}.")
    if largest:
        # A stable ascending sort of the reversed axis, read backwards, is a
        # descending sort in which ties keep their original (ascending) order.
        reversed_order = np.argsort(np.flip(x, axis), axis=axis, kind="stable")
        order = (n - 1) - np.flip(reversed_order, axis)
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    indices = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, indices, axis=axis), indices.astype(np.int64)


def _unique_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None:
        return [None] * ctx.num_outputs
    count = unknown_dim()  # every output shares the (data-dependent) number of uniques
    axis = ctx.attrs["axis"]
    if x.shape is None:
        y_shape = (count,) if axis is None else None
        total: Dim = unknown_dim()
    elif axis is None:
        y_shape, total = (count,), _product(x.shape)
    else:
        axis = normalize_axis(axis, len(x.shape), ctx)
        y_shape = x.shape[:axis] + (count,) + x.shape[axis + 1:]
        total = x.shape[axis]
    types = [TensorType(x.dtype, y_shape), TensorType(INT64, (count,)),
             TensorType(INT64, (total,)), TensorType(INT64, (count,))]
    return types[:ctx.num_outputs]


@op("Unique", attrs={"axis": Attr.INT(None), "sorted": Attr.INT(1)}, infer=_unique_infer,
    inputs=1, outputs=(1, 4))
def unique(x, *, axis, sorted):
    """Unique values (or slices along ``axis``), sorted or in order of first
    occurrence, with first-occurrence indices, inverse indices and counts."""
    if axis is None:
        data, axis_arg = x.reshape(-1), None
    else:
        axis_arg = _axis(axis, x.ndim)
        data = x
    y, first, inverse, counts = np.unique(data, return_index=True, return_inverse=True,
                                          return_counts=True, axis=axis_arg)
    inverse = inverse.reshape(-1)
    if not sorted:
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        y = np.take(y, order, axis=axis_arg if axis_arg is not None else 0)
        first, counts, inverse = first[order], counts[order], rank[inverse]
    return (y.astype(x.dtype, copy=False), first.astype(np.int64), inverse.astype(np.int64),
            counts.astype(np.int64))


# -- DepthToSpace, SpaceToDepth, ReverseSequence ----------------------------------------------


def _block_infer(ctx: InferContext, to_space: bool) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if ctx.attrs["mode"] not in ("DCR", "CRD"):
        raise ctx.error(f"mode {ctx.attrs['mode']!r} is not 'DCR' or 'CRD'.")
    b = ctx.attrs["blocksize"]
    if b < 1:
        raise ctx.error(f"blocksize must be positive, not {b}.")
    if x is None or x.shape is None:
        return [x]
    if len(x.shape) != 4:
        raise ctx.error(f"the input must be 4-D (N, C, H, W), not of shape {list(x.shape)!r}.")
    n, c, h, w = x.shape
    area = b * b
    for d, divisor in ((c, area),) if to_space else ((h, b), (w, b)):
        if isinstance(d, int) and d % divisor:
            raise ctx.error(f"dimension {d} of shape {list(x.shape)!r} is not divisible by "
                            f"{divisor} (blocksize {b}).")

    def scaled(d: Dim, factor: int, divide: bool) -> Dim:
        if not isinstance(d, int):
            return unknown_dim()
        return d // factor if divide else d * factor

    if to_space:
        dims = (n, scaled(c, area, True), scaled(h, b, False), scaled(w, b, False))
    else:
        dims = (n, scaled(c, area, False), scaled(h, b, True), scaled(w, b, True))
    return [TensorType(x.dtype, dims)]


def _check_nchw(x: np.ndarray, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name}'s input must be 4-D (N, C, H, W), not of shape "
                         f"{list(x.shape)!r}.")


@op("DepthToSpace", attrs={"blocksize": Attr.INT(), "mode": Attr.STRING("DCR")},
    infer=lambda ctx: _block_infer(ctx, True), inputs=1)
def depth_to_space(input, *, blocksize, mode):
    """Move blocks of channels into blocksize x blocksize spatial blocks."""
    _check_nchw(input, "DepthToSpace")
    n, c, h, w = input.shape
    b = blocksize
    if c % (b * b):
        raise ValueError(f"DepthToSpace's channels {c} are not divisible by {b * b}.")
    if mode == "DCR":
        tmp = input.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        tmp = input.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return tmp.reshape(n, c // (b * b), h * b, w * b)


@op("SpaceToDepth", attrs={"blocksize": Attr.INT(), "mode": Attr.STRING("DCR")},
    infer=lambda ctx: _block_infer(ctx, False), inputs=1)
def space_to_depth(input, *, blocksize, mode):
    """Move blocksize x blocksize spatial blocks into channels."""
    _check_nchw(input, "SpaceToDepth")
    n, c, h, w = input.shape
    b = blocksize
    if h % b or w % b:
        raise ValueError(f"SpaceToDepth's spatial size {h}x{w} is not divisible by {b}.")
    tmp = input.reshape(n, c, h // b, b, w // b, b)
    tmp = tmp.transpose(0, 3, 5, 1, 2, 4) if mode == "DCR" else tmp.transpose(0, 1, 3, 5, 2, 4)
    return tmp.reshape(n, c * b * b, h // b, w // b)


def _reverse_sequence_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is not None and x.shape is not None:
        rank = len(x.shape)
        if rank < 2:
            raise ctx.error(f"the input must have rank 2 or more, not {rank}.")
        batch = normalize_axis(ctx.attrs["batch_axis"], rank, ctx, "batch_axis")
        time = normalize_axis(ctx.attrs["time_axis"], rank, ctx, "time_axis")
        if batch == time:
            raise ctx.error(f"batch_axis and time_axis are both {batch}.")
    return same_as_input(0)(ctx)


@op("ReverseSequence", attrs={"batch_axis": Attr.INT(1), "time_axis": Attr.INT(0)},
    infer=_reverse_sequence_infer, inputs=2)
def reverse_sequence(input, sequence_lens, *, batch_axis, time_axis):
    """Reverse the first sequence_lens[b] steps along time_axis of each batch entry b."""
    batch_axis, time_axis = _axis(batch_axis, input.ndim), _axis(time_axis, input.ndim)
    x = np.moveaxis(input, (batch_axis, time_axis), (0, 1))
    batch, steps = x.shape[:2]
    lens = np.asarray(sequence_lens, np.int64).reshape(-1)
    if lens.size != batch or (lens < 0).any() or (lens > steps).any():
        raise ValueError(f"ReverseSequence's sequence_lens {lens.tolist()!r} do not fit "
                         f"{batch} sequences of {steps} steps.")
    t = np.arange(steps)
    source = np.where(t < lens[:, None], lens[:, None] - 1 - t, t)  # (batch, steps)
    out = x[np.arange(batch)[:, None], source]
    return np.ascontiguousarray(np.moveaxis(out, (0, 1), (batch_axis, time_axis)))
