"""Type-inference helpers shared by the op definitions.

Symbolic dimensions (strings) flow through: broadcasting ``"batch"`` with 1
gives ``"batch"``; two different symbols broadcast to a fresh unknown symbol.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from heli._errors import ShapeError
from heli.ir._ops import InferContext, InferFn
from heli.ir._types import Dim, DType, Shape, TensorType, Type

_fresh = itertools.count()


def unknown_dim() -> str:
    """A fresh symbolic dimension nobody else shares."""
    return f"?{next(_fresh)}"


def tensor_input(ctx: InferContext, index: int) -> TensorType | None:
    """Input ``index``'s tensor type, or None when absent or not a tensor."""
    if index >= len(ctx.input_types):
        return None
    t = ctx.input_types[index]
    return t if isinstance(t, TensorType) else None


def input_dtype(ctx: InferContext, index: int) -> DType | None:
    t = tensor_input(ctx, index)
    return t.dtype if t is not None else None


def input_shape(ctx: InferContext, index: int) -> Shape | None:
    t = tensor_input(ctx, index)
    return t.shape if t is not None else None


def broadcast_shapes(
    shapes: Sequence[Shape | None], ctx: InferContext | None = None
) -> Shape | None:
    """Numpy-style (multidirectional) broadcasting over possibly symbolic shapes."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)
    result: list[Dim] = []
    for axis in range(rank):
        dims = [s[len(s) - rank + axis] for s in shapes if len(s) - rank + axis >= 0]
        result.append(_broadcast_dims(dims, shapes, ctx))
    return tuple(result)


def _broadcast_dims(dims: list[Dim], shapes, ctx: InferContext | None) -> Dim:
    concrete = {d for d in dims if isinstance(d, int) and d != 1}
    symbols = {d for d in dims if isinstance(d, str)}
    if len(concrete) > 1:
        message = f"the shapes {[list(s) for s in shapes]!r} cannot be broadcast together."
        raise ctx.error(message) if ctx else ShapeError(message.capitalize())
    if concrete:
        return concrete.pop()
    if len(symbols) == 1:
        return symbols.pop()
    if symbols:
        return unknown_dim()
    return 1


def same_as_input(index: int = 0) -> InferFn:
    """Output 0 has exactly the type of input ``index``."""

    def infer(ctx: InferContext) -> list[Type | None]:
        return [ctx.input_types[index] if index < len(ctx.input_types) else None]

    return infer


def all_same_as_input(index: int = 0) -> InferFn:
    """Every output has the type of input ``index``."""

    def infer(ctx: InferContext) -> list[Type | None]:
        return [ctx.input_types[index]] * ctx.num_outputs

    return infer


def broadcast(dtype: DType | None = None, inputs: slice = slice(None)) -> InferFn:
    """Elementwise over broadcast inputs; dtype of input 0 unless given."""

    def infer(ctx: InferContext) -> list[Type | None]:
        types = [tensor_input(ctx, i) for i in range(len(ctx.input_types))][inputs]
        if any(t is None for t in types):
            return [None]
        out_dtype = dtype or types[0].dtype
        return [TensorType(out_dtype, broadcast_shapes([t.shape for t in types], ctx))]

    return infer


def with_dtype(dtype_of: DType | int | str, shape_of: int | None = None) -> InferFn:
    """Output dtype is a fixed DType, the dtype of input ``dtype_of`` (int), or
    the ONNX dtype code in attribute ``dtype_of`` (str); shape is that of input
    ``shape_of`` or unknown."""

    def infer(ctx: InferContext) -> list[Type | None]:
        if isinstance(dtype_of, DType):
            out_dtype = dtype_of
        elif isinstance(dtype_of, int):
            out_dtype = input_dtype(ctx, dtype_of)
        else:
            out_dtype = DType.from_onnx(ctx.attrs[dtype_of])
        if out_dtype is None:
            return [None] * ctx.num_outputs
        shape = input_shape(ctx, shape_of) if shape_of is not None else None
        return [TensorType(out_dtype, shape)] + [None] * (ctx.num_outputs - 1)

    return infer


def unknown_shape(dtype_of: int = 0) -> InferFn:
    """Every output has input ``dtype_of``'s dtype and an unknown shape."""

    def infer(ctx: InferContext) -> list[Type | None]:
        dtype = input_dtype(ctx, dtype_of)
        return [TensorType(dtype, None) if dtype else None] * ctx.num_outputs

    return infer


def normalize_axis(axis: int, rank: int, ctx: InferContext, what: str = "axis") -> int:
    """``axis`` in ``[-rank, rank)`` made non-negative; a ShapeError otherwise."""
    if not -rank <= axis < rank:
        raise ctx.error(f"{what} {axis!r} is out of range for a tensor of rank {rank}.")
    return axis % rank if rank else 0
