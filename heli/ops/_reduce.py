"""Reduction ops (ReduceSum ... ReduceLogSumExp), ArgMax/ArgMin and the
cumulative ops CumSum/CumProd.

Reductions follow opset 18: ``axes`` is an optional int64 input; an absent or
empty ``axes`` reduces every axis unless ``noop_with_empty_axes`` is set, in
which case the op is the identity.  Reducing over an empty set gives the
reduction's identity value (0 for sums, 1 for products, the lowest value for
ReduceMax, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import DType, Shape, TensorType, Type
from heli.ops._infer import normalize_axis, tensor_input, unknown_dim

_REDUCE_ATTRS = {"keepdims": Attr.INT(1), "noop_with_empty_axes": Attr.INT(0)}


# --------------------------------------------------------------------------- helpers


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype floating-point math on ``dtype`` runs in: float32 for the
    narrow floats (float16, bfloat16, float8...), which numpy would otherwise
    round after every step, else the dtype itself."""
    if dtype == np.float64 or dtype == np.float32:
        return dtype
    if dtype.kind in "biu":
        return dtype
    return np.dtype(np.float32)


def _cast(values: np.ndarray | float, dtype: np.dtype) -> np.ndarray:
    """``values`` as ``dtype``; for integers, infinities saturate and NaN is 0
    instead of the platform's undefined conversion."""
    values = np.asarray(values)
    if dtype.kind in "iu" and values.dtype.kind == "f":
        info = np.iinfo(dtype)
        values = np.nan_to_num(values, nan=0, posinf=info.max, neginf=info.min)
        values = np.clip(values, info.min, info.max)
    return values.astype(dtype)


def _resolve_axes(axes: np.ndarray | None, rank: int, noop: int) -> tuple[int, ...] | None:
    """The sorted, non-negative reduced axes; ``None`` means "no reduction"."""
    if axes is None or np.asarray(axes).size == 0:
        return None if noop else tuple(range(rank))
    result = set()
    for axis in np.asarray(axes).reshape(-1).tolist():
        if not -rank <= axis < rank:
            raise ValueError(f"The reduction axis {axis!r} is out of range for rank {rank}.")
        result.add(axis % rank)
    return tuple(sorted(result))


def _reduced_shape(shape: Shape, axes: tuple[int, ...], keepdims: int) -> Shape:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce_infer(ctx: InferContext) -> list[Type | None]:
    data = tensor_input(ctx, 0)
    if data is None:
        return [None]
    keepdims, noop = ctx.attrs["keepdims"], ctx.attrs["noop_with_empty_axes"]
    if data.shape is None:
        return [TensorType(data.dtype, None)]
    rank = len(data.shape)
    if ctx.has_input(1) and ctx.const(1) is None:
        # The axes are only known at run time.
        if not keepdims:
            return [TensorType(data.dtype, None)]
        return [TensorType(data.dtype, tuple(1 if d == 1 else unknown_dim() for d in data.shape))]
    axes_value = ctx.const(1) if ctx.has_input(1) else None
    if axes_value is not None:
        for axis in np.asarray(axes_value).reshape(-1).tolist():
            normalize_axis(int(axis), rank, ctx, "reduction axis")
    axes = _resolve_axes(axes_value, rank, noop)
    if axes is None:
        return [data]
    return [TensorType(data.dtype, _reduced_shape(data.shape, axes, keepdims))]


Kernel = Callable[[np.ndarray, tuple[int, ...]], np.ndarray]


def _reduce(
    data: np.ndarray,
    axes: np.ndarray | None,
    keepdims: int,
    noop: int,
    kernel: Kernel,
    identity: Callable[[np.dtype], float | bool],
) -> np.ndarray:
    """Apply ``kernel(data, axes)`` (which reduces with keepdims) and shape the
    result; an empty reduced set gives ``identity(dtype)`` everywhere."""
    resolved = _resolve_axes(axes, data.ndim, noop)
    if resolved is None:
        return data
    out_shape = _reduced_shape(data.shape, resolved, keepdims)
    keep_shape = _reduced_shape(data.shape, resolved, 1)
    if any(data.shape[a] == 0 for a in resolved):
        return np.full(out_shape, _cast(identity(data.dtype), data.dtype), dtype=data.dtype)
    result = kernel(data, resolved)
    return _cast(np.asarray(result).reshape(keep_shape), data.dtype).reshape(out_shape)


def _lowest(dtype: np.dtype) -> float | bool:
    if dtype == np.bool_:
        return False
    return int(np.iinfo(dtype).min) if dtype.kind in "iu" else -np.inf


def _highest(dtype: np.dtype) -> float | bool:
    if dtype == np.bool_:
        return True
    return int(np.iinfo(dtype).max) if dtype.kind in "iu" else np.inf


def _register_reduce(name: str, kernel: Kernel, identity: Callable[[np.dtype], float | bool],
                     doc: str) -> None:
    def reference(data, axes=None, *, keepdims, noop_with_empty_axes):
        return _reduce(data, axes, keepdims, noop_with_empty_axes, kernel, identity)

    reference.__name__ = reference.__qualname__ = name.lower()
    reference.__doc__ = doc
    op(name, infer=_reduce_infer, attrs=_REDUCE_ATTRS, inputs=(1, 2))(reference)


# --------------------------------------------------------------------------- kernels
# Each kernel reduces ``x`` over ``axes`` with keepdims; float16-like inputs
# accumulate in float32, integers in their own type (wrapping like ORT).


def _sum(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    work = _work_dtype(x.dtype)
    return np.sum(x.astype(work, copy=False), axis=axes, dtype=work, keepdims=True)


def _mean(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod([x.shape[a] for a in axes]))
    if x.dtype.kind in "iu":
        # Integer mean truncates toward zero like a C++ integer division.
        total = np.sum(x, axis=axes, dtype=x.dtype, keepdims=True)
        return np.trunc(total / count)
    work = _work_dtype(x.dtype)
    return np.sum(x.astype(work, copy=False), axis=axes, keepdims=True) / work.type(count)


def _max(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.max(x.astype(_work_dtype(x.dtype), copy=False), axis=axes, keepdims=True)


def _min(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.min(x.astype(_work_dtype(x.dtype), copy=False), axis=axes, keepdims=True)


def _prod(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    work = _work_dtype(x.dtype)
    return np.prod(x.astype(work, copy=False), axis=axes, dtype=work, keepdims=True)


def _l1(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    work = _work_dtype(x.dtype)
    return np.sum(np.abs(x.astype(work, copy=False)), axis=axes, dtype=work, keepdims=True)


def _sum_square(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    xw = x.astype(_work_dtype(x.dtype), copy=False)
    return np.sum(xw * xw, axis=axes, dtype=xw.dtype, keepdims=True)


def _float_work(x: np.ndarray) -> np.ndarray:
    """``x`` in the float type that sqrt/log/exp should run in."""
    if x.dtype.kind in "biu":
        return x.astype(np.float64)
    return x.astype(_work_dtype(x.dtype), copy=False)


def _l2(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    xw = _float_work(x)
    return np.sqrt(np.sum(xw * xw, axis=axes, keepdims=True))


def _log_sum(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.log(np.sum(_float_work(x), axis=axes, keepdims=True))


def _log_sum_exp(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    # Subtract the maximum so that exp cannot overflow; an infinite maximum
    # (all -inf, or a +inf) is not subtracted, to keep the result inf/-inf.
    xw = _float_work(x)
    peak = np.max(xw, axis=axes, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, xw.dtype.type(0))
    return np.log(np.sum(np.exp(xw - peak), axis=axes, keepdims=True)) + peak


def _zero(dtype: np.dtype) -> float:
    return 0


def _one(dtype: np.dtype) -> float:
    return 1


def _neg_inf(dtype: np.dtype) -> float:
    return -np.inf


def _mean_identity(dtype: np.dtype) -> float:
    return 0 if dtype.kind in "iu" else np.nan  # 0 / 0


_register_reduce("ReduceSum", _sum, _zero, "Sum over the given axes.")
_register_reduce("ReduceMean", _mean, _mean_identity, "Mean over the given axes.")
_register_reduce("ReduceMax", _max, _lowest, "Maximum over the given axes.")
_register_reduce("ReduceMin", _min, _highest, "Minimum over the given axes.")
_register_reduce("ReduceProd", _prod, _one, "Product over the given axes.")
_register_reduce("ReduceL1", _l1, _zero, "Sum of absolute values over the given axes.")
_register_reduce("ReduceL2", _l2, _zero, "Euclidean norm over the given axes.")
_register_reduce("ReduceLogSum", _log_sum, _neg_inf, "log(sum(x)) over the given axes.")
_register_reduce("ReduceLogSumExp", _log_sum_exp, _neg_inf,
                 "log(sum(exp(x))) over the given axes, computed stably.")
_register_reduce("ReduceSumSquare", _sum_square, _zero, "Sum of squares over the given axes.")


# --------------------------------------------------------------------------- ArgMax / ArgMin

_ARG_ATTRS = {"axis": Attr.INT(0), "keepdims": Attr.INT(1), "select_last_index": Attr.INT(0)}


def _arg_infer(ctx: InferContext) -> list[Type | None]:
    data = tensor_input(ctx, 0)
    if data is None or data.shape is None:
        return [TensorType(DType.INT64, None)]
    axis = normalize_axis(ctx.attrs["axis"], len(data.shape), ctx)
    if data.shape[axis] == 0:
        raise ctx.error(f"cannot take {ctx.op.name} over axis {axis} of size 0.")
    return [TensorType(DType.INT64, _reduced_shape(data.shape, (axis,), ctx.attrs["keepdims"]))]


def _arg(data: np.ndarray, axis: int, keepdims: int, last: int, pick: Callable) -> np.ndarray:
    if not -data.ndim <= axis < data.ndim:
        raise ValueError(f"axis {axis!r} is out of range for rank {data.ndim}.")
    if data.dtype.kind not in "biuf":  # ml_dtypes floats: compare as float32
        data = data.astype(np.float32)
    axis %= data.ndim
    if last:
        flipped = np.flip(data, axis=axis)
        index = data.shape[axis] - 1 - pick(flipped, axis=axis, keepdims=True)
    else:
        index = pick(data, axis=axis, keepdims=True)
    index = index.astype(np.int64)
    return index if keepdims else np.squeeze(index, axis=axis)


@op("ArgMax", infer=_arg_infer, attrs=_ARG_ATTRS, inputs=1)
def argmax(data, *, axis, keepdims, select_last_index):
    """Index of the largest element along ``axis`` (first one, or last with
    ``select_last_index``)."""
    return _arg(data, axis, keepdims, select_last_index, np.argmax)


@op("ArgMin", infer=_arg_infer, attrs=_ARG_ATTRS, inputs=1)
def argmin(data, *, axis, keepdims, select_last_index):
    """Index of the smallest element along ``axis`` (first one, or last with
    ``select_last_index``)."""
    return _arg(data, axis, keepdims, select_last_index, np.argmin)


# --------------------------------------------------------------------------- CumSum / CumProd

_CUM_ATTRS = {"exclusive": Attr.INT(0), "reverse": Attr.INT(0)}


def _cum_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    axis_type = tensor_input(ctx, 1)
    if axis_type is not None and axis_type.shape is not None and len(axis_type.shape) > 1:
        raise ctx.error(f"the axis input must be a scalar, not of shape {list(axis_type.shape)}.")
    axis = ctx.const(1)
    if x is not None and x.shape is not None and axis is not None:
        if np.asarray(axis).size != 1:
            raise ctx.error(f"the axis input must hold one value, not {np.asarray(axis).size}.")
        normalize_axis(int(np.asarray(axis).reshape(-1)[0]), len(x.shape), ctx)
    return [x]


def _cumulative(x: np.ndarray, axis_value: np.ndarray, exclusive: int, reverse: int,
                scan: Callable, identity: int) -> np.ndarray:
    axis_value = np.asarray(axis_value)
    if axis_value.size != 1:
        raise ValueError(f"The axis input must hold one value, not {axis_value.size}.")
    axis = int(axis_value.reshape(-1)[0])
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis!r} is out of range for rank {x.ndim}.")
    work = _work_dtype(x.dtype)
    data = x.astype(work, copy=False)
    if reverse:
        data = np.flip(data, axis=axis)
    result = scan(data, axis=axis, dtype=work)
    if exclusive:
        # Shift by one along the axis (exact, unlike subtracting x back out).
        head_shape = list(result.shape)
        head_shape[axis] = min(1, head_shape[axis])
        head = np.full(head_shape, identity, dtype=work)
        body = np.take(result, np.arange(result.shape[axis] - 1), axis=axis)
        result = np.concatenate([head, body], axis=axis)
    if reverse:
        result = np.flip(result, axis=axis)
    return np.ascontiguousarray(result).astype(x.dtype, copy=False)


@op("CumSum", infer=_cum_infer, attrs=_CUM_ATTRS, inputs=2)
def cumsum(x, axis, *, exclusive, reverse):
    """Running sum along ``axis`` (optionally exclusive and/or reversed)."""
    return _cumulative(x, axis, exclusive, reverse, np.cumsum, 0)


@op("CumProd", infer=_cum_infer, attrs=_CUM_ATTRS, inputs=2)
def cumprod(x, axis, *, exclusive, reverse):
    """Running product along ``axis`` (optionally exclusive and/or reversed)."""
    return _cumulative(x, axis, exclusive, reverse, np.cumprod, 1)
