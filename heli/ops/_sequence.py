"""sequence ops.

Sequences and optionals of ONNX: at run time a sequence is a Python ``list``
of arrays and an optional is ``None`` or its value.  A reference function
whose output is a sequence returns it wrapped in a 1-tuple, because the
executor would read a bare list as several outputs.

Also here: the type helpers that the control-flow ops share (merging the
types two code paths give one value, loosening a type to its kind).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import DType, OptionalType, SequenceType, TensorType, Type
from heli.ops._infer import normalize_axis, tensor_input, unknown_dim

# -- type helpers (shared with heli.ops._control) -----------------------------


def merge_types(a: Type | None, b: Type | None) -> Type | None:
    """The most precise type that covers values of type ``a`` and of type ``b``.

    Dimensions that differ become fresh unknowns; a rank mismatch makes the
    shape unknown.  An optional merged with its element kind gives the element
    kind (control flow may unwrap an optional on one path).
    """
    if a is None or b is None:
        return None
    if a == b:
        return a
    if isinstance(a, TensorType) and isinstance(b, TensorType):
        if a.dtype != b.dtype:
            return None
        if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
            return TensorType(a.dtype, None)
        dims = tuple(x if x == y else unknown_dim() for x, y in zip(a.shape, b.shape, strict=True))
        return TensorType(a.dtype, dims)
    if isinstance(a, SequenceType) and isinstance(b, SequenceType):
        return SequenceType(merge_types(a.elem, b.elem))
    if isinstance(a, OptionalType) and isinstance(b, OptionalType):
        return OptionalType(merge_types(a.elem, b.elem))
    if isinstance(a, OptionalType):
        return merge_types(a.elem, b)
    if isinstance(b, OptionalType):
        return merge_types(a, b.elem)
    return None


def loosen(t: Type | None) -> Type | None:
    """``t`` with every tensor shape forgotten (its dtypes and kinds kept)."""
    if isinstance(t, TensorType):
        return TensorType(t.dtype, None)
    if isinstance(t, SequenceType):
        return SequenceType(loosen(t.elem))
    if isinstance(t, OptionalType):
        return OptionalType(loosen(t.elem))
    return None


def type_symbols(types: Iterable[Type | None]) -> set[str]:
    """Every symbolic dimension named in ``types`` (containers included)."""
    found: set[str] = set()
    for t in types:
        while isinstance(t, SequenceType | OptionalType):
            t = t.elem
        if isinstance(t, TensorType):
            found.update(t.symbols)
    return found


def localize(t: Type | None, visible: set[str]) -> Type | None:
    """``t`` with symbols a subgraph declared for itself made fresh.

    A body's declared ``float[N]`` names a dimension local to that body; only
    symbols the enclosing scope also uses may keep their name outside it.
    """
    if isinstance(t, TensorType):
        if t.shape is None or all(isinstance(d, int) or d in visible for d in t.shape):
            return t
        return TensorType(t.dtype, tuple(d if isinstance(d, int) or d in visible
                                         else unknown_dim() for d in t.shape))
    if isinstance(t, SequenceType):
        return SequenceType(localize(t.elem, visible))
    if isinstance(t, OptionalType):
        return OptionalType(localize(t.elem, visible))
    return t


def _sequence_input(ctx: InferContext, index: int) -> SequenceType | None:
    t = ctx.input_types[index] if index < len(ctx.input_types) else None
    if t is None:
        return None
    if not isinstance(t, SequenceType):
        raise ctx.error(f"input {index} must be a sequence, but it has type {t}.")
    return t


def _elem_of(seq: SequenceType | None) -> TensorType | None:
    if seq is None or not isinstance(seq.elem, TensorType):
        return None
    return seq.elem


def _scalar_index(position: np.ndarray, what: str) -> int:
    position = np.asarray(position)
    if position.size != 1 or position.dtype.kind not in "iu":
        raise ValueError(
            f"The {what} must be one integer, but it has shape {list(position.shape)!r} and "
            f"dtype {position.dtype.name!r}."
        )
    return int(position.reshape(()))


def _check_sequence(value, what: str = "input sequence") -> list:
    if isinstance(value, tuple):  # a user's feed
        return list(value)
    if not isinstance(value, list):
        raise ValueError(f"The {what} must be a sequence, not {type(value).__name__!r}.")
    return value


# -- construction and access --------------------------------------------------


def _construct_infer(ctx: InferContext) -> list[Type | None]:
    types = [tensor_input(ctx, i) for i in range(len(ctx.input_types))]
    if any(t is None for t in types):
        return [SequenceType(None)]
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        shown = sorted(map(str, dtypes))
        raise ctx.error(f"all inputs must have one dtype, but they have {shown}.")
    elem: Type | None = types[0]
    for t in types[1:]:
        elem = merge_types(elem, t)
    return [SequenceType(elem)]


@op("SequenceConstruct", infer=_construct_infer, inputs=(1, None))
def sequence_construct(*tensors):
    """A sequence holding the input tensors, in order."""
    return (list(tensors),)


def _empty_infer(ctx: InferContext) -> list[Type | None]:
    return [SequenceType(TensorType(DType.from_onnx(ctx.attrs["dtype"]), None))]


@op("SequenceEmpty", infer=_empty_infer, inputs=0, attrs={"dtype": Attr.INT(1)})
def sequence_empty(*, dtype):
    """An empty sequence of tensors of ``dtype`` (float32 by default)."""
    return ([],)


def _insert_infer(ctx: InferContext) -> list[Type | None]:
    seq = _sequence_input(ctx, 0)
    tensor = tensor_input(ctx, 1)
    elem = _elem_of(seq)
    if elem is not None and tensor is not None and elem.dtype != tensor.dtype:
        raise ctx.error(
            f"the tensor has dtype {tensor.dtype} but the sequence holds {elem.dtype} tensors."
        )
    if seq is None:
        return [SequenceType(tensor)]
    return [SequenceType(merge_types(seq.elem, tensor))]


@op("SequenceInsert", infer=_insert_infer, inputs=(2, 3))
def sequence_insert(sequence, tensor, position=None):
    """A copy of ``sequence`` with ``tensor`` inserted at ``position`` (default: the end)."""
    items = list(_check_sequence(sequence))
    if items and items[0].dtype != tensor.dtype:
        raise ValueError(
            f"The tensor has dtype {tensor.dtype.name!r} but the sequence holds "
            f"{items[0].dtype.name!r} tensors."
        )
    if position is None:
        items.append(tensor)
        return (items,)
    index = _scalar_index(position, "insert position")
    n = len(items)
    if not -n <= index <= n:
        raise IndexError(f"Insert position {index} is out of range for a sequence of length {n}.")
    items.insert(index + n if index < 0 else index, tensor)
    return (items,)


def _same_sequence(ctx: InferContext) -> list[Type | None]:
    return [_sequence_input(ctx, 0)]


@op("SequenceErase", infer=_same_sequence, inputs=(1, 2))
def sequence_erase(sequence, position=None):
    """A copy of ``sequence`` without the tensor at ``position`` (default: the last)."""
    items = list(_check_sequence(sequence))
    n = len(items)
    index = -1 if position is None else _scalar_index(position, "erase position")
    if not -n <= index < n:
        raise IndexError(f"Erase position {index} is out of range for a sequence of length {n}.")
    del items[index]
    return (items,)


def _at_infer(ctx: InferContext) -> list[Type | None]:
    seq = _sequence_input(ctx, 0)
    return [seq.elem if seq is not None else None]


@op("SequenceAt", infer=_at_infer, inputs=2)
def sequence_at(sequence, position):
    """The tensor at ``position`` (negative counts from the end)."""
    items = _check_sequence(sequence)
    index = _scalar_index(position, "position")
    n = len(items)
    if not -n <= index < n:
        raise IndexError(f"Position {index} is out of range for a sequence of length {n}.")
    return items[index]


def _length_infer(ctx: InferContext) -> list[Type | None]:
    _sequence_input(ctx, 0)
    return [TensorType(DType.INT64, ())]


@op("SequenceLength", infer=_length_infer, inputs=1)
def sequence_length(sequence):
    """The number of tensors in ``sequence`` (an int64 scalar)."""
    return np.array(len(_check_sequence(sequence)), dtype=np.int64)


# -- concatenation and splitting ----------------------------------------------


def _concat_infer(ctx: InferContext) -> list[Type | None]:
    elem = _elem_of(_sequence_input(ctx, 0))
    if elem is None:
        return [None]
    new_axis = ctx.attrs["new_axis"]
    if new_axis not in (0, 1):
        raise ctx.error(f"new_axis must be 0 or 1, not {new_axis!r}.")
    if elem.shape is None:
        return [TensorType(elem.dtype, None)]
    rank = len(elem.shape) + new_axis
    axis = normalize_axis(ctx.attrs["axis"], rank, ctx)
    dims = list(elem.shape)
    # The number of elements is unknown until run time, so the joined axis is.
    if new_axis:
        dims.insert(axis, unknown_dim())
    else:
        dims[axis] = unknown_dim()
    return [TensorType(elem.dtype, tuple(dims))]


@op("ConcatFromSequence", infer=_concat_infer, inputs=1,
    attrs={"axis": Attr.INT(), "new_axis": Attr.INT(0)})
def concat_from_sequence(sequence, *, axis, new_axis):
    """The sequence's tensors joined along ``axis`` (stacked on a new axis if ``new_axis``)."""
    items = _check_sequence(sequence)
    if not items:
        raise ValueError("ConcatFromSequence needs a non-empty sequence.")
    rank = items[0].ndim + (1 if new_axis else 0)
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis!r} is out of range for rank {rank}.")
    if new_axis:
        return np.stack(items, axis=axis)
    return np.concatenate(items, axis=axis)


def _split_sizes(length: int, split: np.ndarray | None) -> list[int]:
    """Chunk sizes along an axis of ``length`` for SplitToSequence's ``split``."""
    if split is None:
        return [1] * length
    split = np.asarray(split)
    if split.ndim == 0:
        size = int(split)
        if size <= 0:
            raise ValueError(f"The split size must be positive, not {size}.")
        return [size] * (length // size) + ([length % size] if length % size else [])
    sizes = [int(s) for s in split.reshape(-1)]
    if any(s < 0 for s in sizes) or sum(sizes) != length:
        raise ValueError(
            f"The split sizes {sizes!r} must be non-negative and sum to the axis length {length}."
        )
    return sizes


def _split_infer(ctx: InferContext) -> list[Type | None]:
    x = tensor_input(ctx, 0)
    if x is None:
        return [SequenceType(None)]
    if x.shape is None:
        return [SequenceType(TensorType(x.dtype, None))]
    axis = normalize_axis(ctx.attrs["axis"], len(x.shape), ctx)
    dims = list(x.shape)
    if not ctx.has_input(1):
        if not ctx.attrs["keepdims"]:
            del dims[axis]
        else:
            dims[axis] = 1
        return [SequenceType(TensorType(x.dtype, tuple(dims)))]
    split, length = ctx.const(1), dims[axis]
    dims[axis] = unknown_dim()
    if split is not None and isinstance(length, int):
        try:
            sizes = set(_split_sizes(length, split))
        except ValueError as error:
            raise ctx.error(str(error)) from None
        if len(sizes) == 1:
            dims[axis] = sizes.pop()
    return [SequenceType(TensorType(x.dtype, tuple(dims)))]


@op("SplitToSequence", infer=_split_infer, inputs=(1, 2),
    attrs={"axis": Attr.INT(0), "keepdims": Attr.INT(1)})
def split_to_sequence(x, split=None, *, axis, keepdims):
    """``x`` split along ``axis`` into a sequence: chunks of size ``split`` (a
    scalar; the last may be smaller), sizes ``split`` (1-D), or single slices
    (dropped axis unless ``keepdims``) when ``split`` is omitted."""
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis!r} is out of range for a tensor of rank {x.ndim}.")
    axis %= x.ndim
    sizes = _split_sizes(x.shape[axis], split)
    bounds = np.cumsum([0] + sizes)
    lead = (slice(None),) * axis
    parts = [x[lead + (slice(int(a), int(b)),)] for a, b in zip(bounds[:-1], bounds[1:],
                                                                  strict=True)]
    if split is None and not keepdims:
        parts = [np.squeeze(p, axis=axis) for p in parts]
    return ([np.ascontiguousarray(p) for p in parts],)


# -- optionals ----------------------------------------------------------------


def _optional_infer(ctx: InferContext) -> list[Type | None]:
    if ctx.input_types:  # an input: its type, or the attribute's when unknown
        return [OptionalType(ctx.input_types[0] or ctx.attrs["type"])]
    if ctx.attrs["type"] is None:
        raise ctx.error("an Optional without an input needs the 'type' attribute.")
    return [OptionalType(ctx.attrs["type"])]


@op("Optional", infer=_optional_infer, inputs=(0, 1), attrs={"type": Attr.TYPE(None)})
def optional(value=None, *, type):
    """An optional holding ``value``, or an empty one (of element ``type``)."""
    return (value,) if isinstance(value, list) else value


def _has_element_infer(ctx: InferContext) -> list[Type | None]:
    return [TensorType(DType.BOOL, ())]


@op("OptionalHasElement", infer=_has_element_infer, inputs=(0, 1))
def optional_has_element(value=None):
    """True when the optional (or plain tensor/sequence) input holds a value."""
    return np.array(value is not None)


def _get_element_infer(ctx: InferContext) -> list[Type | None]:
    t = ctx.input_types[0]
    return [t.elem if isinstance(t, OptionalType) else t]


@op("OptionalGetElement", infer=_get_element_infer, inputs=1)
def optional_get_element(value):
    """The value inside an optional (a plain tensor or sequence passes through)."""
    if value is None:
        raise ValueError("OptionalGetElement got an empty optional.")
    return (value,) if isinstance(value, list) else value
