"""What the cpu target's code generators share to call their C kernels: the
step types, the ctypes argument types, and small helpers to bind a kernel and
hand it float32 arrays."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np

from heli.ir._graph import Value

F32 = np.dtype(np.float32)
#: Values by name while a model runs; a step reads and writes it.
Env = dict[str, np.ndarray]
Step = Callable[[Env], None]
#: Binds a step to the compiled library.
Maker = Callable[[ctypes.CDLL], Step]

VOID, LONG, INT, FLOAT = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float


def f32(x: np.ndarray) -> np.ndarray:
    """``x`` as a C-contiguous float32 array (no copy when it is one)."""
    if x.dtype == F32 and x.flags.c_contiguous:
        return x
    return np.ascontiguousarray(x, dtype=F32)


def static_shape(value: Value) -> tuple[int, ...]:
    """The static shape of ``value`` (the cpu target claims static shapes only)."""
    return tuple(value.tensor_type.shape)  # type: ignore[arg-type]


def bind(lib: ctypes.CDLL, name: str, argtypes: list) -> Callable[..., None]:
    """The C function ``name`` of ``lib`` with its argument types set."""
    fn = getattr(lib, name)
    fn.argtypes = argtypes
    fn.restype = None
    return fn
