"""How large one tensor may be.

A corrupted or wrong shape (a mutated shape constant asking for 10**12
elements in ``ConstantOfShape``, ``Expand``, ``Tile``, ``Range``, ``Resize``,
``Pad``...) must give one clear error, not minutes of swapping, an
out-of-memory kill or numpy's own overflow messages.  So Heli refuses to make
a tensor of more than ``max_tensor_bytes()`` bytes, much as ONNX Runtime fails
an allocation, but before any memory is touched:

* the builder checks every statically known output shape while it infers
  types (a :class:`ShapeError` when the model is imported or specialized);
* the reference functions of ops whose output size depends on tensor *data*
  call :func:`check_tensor_size` before allocating (a ``ValueError``, which
  the executor reports as an :class:`ExecutionError` naming the node).

The limit is 16 GiB per tensor; the environment variable
``HELI_MAX_TENSOR_BYTES`` (a number of bytes) changes it.  A tensor may also
have at most ``MAX_RANK`` (32) dimensions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from heli._errors import HeliError

__all__ = ["DEFAULT_MAX_TENSOR_BYTES", "MAX_RANK", "check_tensor_size", "max_tensor_bytes",
           "size_problem"]

DEFAULT_MAX_TENSOR_BYTES = 16 << 30
MAX_RANK = 32  # numpy's broadcasting and iteration stop at 32 dimensions
_ENV = "HELI_MAX_TENSOR_BYTES"


def max_tensor_bytes() -> int:
    """The most bytes one tensor may take (``$HELI_MAX_TENSOR_BYTES``, default 16 GiB)."""
    text = os.environ.get(_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_TENSOR_BYTES
    try:
        limit = int(text)
    except ValueError:
        limit = -1
    if limit < 0:
        raise HeliError(f"{_ENV}={text!r} is not a number of bytes (a whole number >= 0).")
    return limit


def _show_bytes(n: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def size_problem(shape: Sequence[int], dtype: np.dtype | type | None) -> str | None:
    """Why a tensor of this (static) shape and dtype may not be made, or ``None``.

    Sizes are multiplied as Python ints, so a product that would overflow
    int64 is reported too.
    """
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        return f"the shape {dims!r} has a negative dimension."
    if len(dims) > MAX_RANK:
        return (f"a tensor of shape {dims!r} would have {len(dims)} dimensions, more than the "
                f"{MAX_RANK} Heli supports; the shape is probably wrong.")
    count = math.prod(dims)
    itemsize = np.dtype(dtype).itemsize if dtype is not None else 1
    nbytes = count * max(itemsize, 1)
    limit = max_tensor_bytes()
    if nbytes <= limit:
        return None
    name = np.dtype(dtype).name if dtype is not None else "data"
    return (
        f"a tensor of shape {dims!r} would take {_show_bytes(nbytes)} ({count:,} elements of "
        f"{name}), more than the {_show_bytes(limit)} Heli allows for one tensor (set "
        f"{_ENV} to change the limit); the shape is probably wrong."
    )


def check_tensor_size(shape: Sequence[int], dtype: np.dtype | type | None,
                      what: str = "the result") -> None:
    """Raise ``ValueError`` if a tensor of ``shape`` and ``dtype`` is too large to make.

    For reference functions, before they allocate an output whose size comes
    from tensor data; the executor turns the error into an ExecutionError.
    """
    problem = size_problem(shape, dtype)
    if problem is not None:
        raise ValueError(f"{what} would be too large: {problem}")
