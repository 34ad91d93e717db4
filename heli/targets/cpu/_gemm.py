"""numpy front end of the C SGEMM in ``kernels/sgemm.c``.

    C = act(alpha * op(A) @ op(B) + beta * C + bias)

``sgemm`` takes float32 numpy matrices; ``pack_b`` packs a constant op(B)
once (the cpu target does this for weights at compile time) and
``sgemm_prepacked`` reuses it.  Row-major and column-major (transposed
views) inputs are used in place: a view whose rows are contiguous is passed
with its row stride, one whose columns are contiguous as the transpose of a
row-major matrix; anything else is copied first.  The library is compiled
per ISA level on first use (see ``_toolchain``), with the thread pool's
header in front (it runs its threads on the pool).
"""

from __future__ import annotations

import ctypes
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from heli._errors import ExecutionError, ShapeError
from heli.targets.cpu import _toolchain

SOURCE_PATH = Path(__file__).with_name("kernels") / "sgemm.c"

_F32 = np.dtype(np.float32)
_BIAS_KINDS = {None: 0, "col": 1, "row": 2}

_c_long, _c_int, _c_float = ctypes.c_long, ctypes.c_int, ctypes.c_float
_ptr = ctypes.c_void_p


@dataclass(frozen=True)
class GemmConfig:
    """Blocking of one build of the library."""

    mr: int
    nr: int
    kc: int
    mc: int
    nc: int
    vector_width: int
    isa: str
    threaded: bool  # runs its threads on the pool (always true now)


class GemmLibrary:
    """The SGEMM library built for one ISA level."""

    def __init__(self, lib: ctypes.CDLL, isa: str) -> None:
        self._lib = lib
        self.isa = isa
        lib.heli_sgemm_config.argtypes = [ctypes.POINTER(_c_long)]
        lib.heli_sgemm_config.restype = None
        lib.heli_sgemm_packed_b_size.argtypes = [_c_long, _c_long]
        lib.heli_sgemm_packed_b_size.restype = _c_long
        lib.heli_sgemm_pack_b.argtypes = [_c_int, _c_long, _c_long, _ptr, _c_long, _ptr]
        lib.heli_sgemm_pack_b.restype = None
        lib.heli_sgemm.argtypes = [
            _c_int, _c_int, _c_long, _c_long, _c_long, _c_float, _ptr, _c_long, _ptr, _c_long,
            _c_float, _ptr, _c_long, _ptr, _c_int, _c_int, _c_float, _c_float, _c_int]
        lib.heli_sgemm.restype = _c_int
        lib.heli_sgemm_prepacked.argtypes = [
            _c_int, _c_long, _c_long, _c_long, _c_float, _ptr, _c_long, _ptr, _c_float, _ptr,
            _c_long, _ptr, _c_int, _c_int, _c_float, _c_float, _c_int]
        lib.heli_sgemm_prepacked.restype = _c_int
        out = (_c_long * 8)()
        lib.heli_sgemm_config(out)
        names = {0: "portable", 1: "avx2", 2: "avx512"}
        self.config = GemmConfig(out[0], out[1], out[2], out[3], out[4], out[5],
                                 names.get(out[6], "?"), bool(out[7]))

    @property
    def raw(self) -> ctypes.CDLL:
        """The ctypes handle (for callers that pass pointers themselves)."""
        return self._lib


_libraries: dict[str, GemmLibrary] = {}
_lock = threading.Lock()


def library(isa: str | None = None) -> GemmLibrary:
    """The SGEMM library for ``isa`` (default: the host's), built on first use."""
    isa = isa or _toolchain.host_isa()
    with _lock:
        found = _libraries.get(isa)
        if found is None:
            source = _toolchain.pool_header() + SOURCE_PATH.read_text()
            lib = _toolchain.compile_library(source, isa=isa, name=f"sgemm-{isa}")
            found = _libraries[isa] = GemmLibrary(lib, isa)
        return found


# ------------------------------------------------------------------ helpers

def _as_matrix(x: np.ndarray, what: str) -> tuple[np.ndarray, bool, int]:
    """(array, transposed, leading dimension): ``x`` viewed as a row-major
    matrix or as the transpose of one, without copying where possible."""
    if not isinstance(x, np.ndarray) or x.dtype != _F32:
        dtype = getattr(x, "dtype", type(x).__name__)
        raise ShapeError(f"sgemm needs float32 numpy arrays, but {what} is {dtype}.")
    if x.ndim != 2:
        raise ShapeError(f"sgemm needs 2-D matrices, but {what} has shape {x.shape}.")
    rows, cols = x.shape
    s0, s1 = x.strides
    if (s1 == 4 or cols <= 1) and s0 % 4 == 0 and s0 >= 4 * max(cols, 1):
        return x, False, max(s0 // 4, cols, 1)
    if (s0 == 4 or rows <= 1) and s1 % 4 == 0 and s1 >= 4 * max(rows, 1):
        return x, True, max(s1 // 4, rows, 1)
    return np.ascontiguousarray(x), False, max(cols, 1)


def _epilogue(bias: np.ndarray | None, bias_axis: str, activation, m: int, n: int,
              ) -> tuple[np.ndarray | None, int, int, float, float]:
    kind = 0
    if bias is not None:
        if bias_axis not in ("col", "row"):
            raise ShapeError(f"bias_axis must be 'col' or 'row', not {bias_axis!r}.")
        want = n if bias_axis == "col" else m
        bias = np.ascontiguousarray(bias, dtype=np.float32)
        if bias.shape != (want,):
            raise ShapeError(
                f"A per-{bias_axis} bias must have shape ({want},), not {bias.shape}.")
        kind = _BIAS_KINDS[bias_axis]
    if activation is None:
        return bias, kind, 0, -math.inf, math.inf
    if activation == "relu":
        return bias, kind, 1, 0.0, math.inf
    if (isinstance(activation, tuple) and len(activation) == 3 and activation[0] == "clip"):
        lo = -math.inf if activation[1] is None else float(activation[1])
        hi = math.inf if activation[2] is None else float(activation[2])
        return bias, kind, 1, lo, hi
    raise ShapeError(
        f"activation must be None, 'relu' or ('clip', lo, hi), not {activation!r}.")


def _out(c: np.ndarray | None, m: int, n: int, beta: float) -> tuple[np.ndarray, int]:
    if c is None:
        if beta != 0.0:
            raise ShapeError("beta is nonzero but no C matrix was given.")
        return np.empty((m, n), dtype=np.float32), max(n, 1)
    if not isinstance(c, np.ndarray) or c.dtype != _F32 or c.shape != (m, n):
        raise ShapeError(
            f"C must be a float32 array of shape {(m, n)}, not "
            f"{getattr(c, 'dtype', type(c).__name__)} {getattr(c, 'shape', '')}.")
    if not c.flags.writeable:
        raise ShapeError("C must be writeable.")
    if (c.strides[1] != 4 and n > 1) or c.strides[0] % 4 or (m > 1 and c.strides[0] < 4 * n):
        raise ShapeError(f"C must have contiguous rows; its strides are {c.strides}.")
    return c, max(c.strides[0] // 4, n, 1)


def _ptr_of(x: np.ndarray | None) -> int | None:
    return None if x is None else x.ctypes.data


def _threads(num_threads: int | None) -> int:
    return _toolchain.num_threads(num_threads)


# ---------------------------------------------------------------------- API

def sgemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, *, alpha: float = 1.0,
          beta: float = 0.0, trans_a: bool = False, trans_b: bool = False,
          bias: np.ndarray | None = None, bias_axis: str = "col", activation=None,
          num_threads: int | None = None, isa: str | None = None) -> np.ndarray:
    """``act(alpha * op(a) @ op(b) + beta * c + bias)``, written into ``c``
    (float32, contiguous rows) when given, else into a new array.

    ``op(x)`` is ``x.T`` when ``trans_x``.  ``bias`` has one value per column
    (``bias_axis="col"``, length N) or per row (``"row"``, length M).
    ``activation`` is ``None``, ``"relu"`` or ``("clip", lo, hi)`` (``None``
    for an open end).  ``beta == 0`` ignores the old contents of ``c``.
    """
    a, ta, lda = _as_matrix(a, "A")
    b, tb, ldb = _as_matrix(b, "B")
    ta, tb = ta != bool(trans_a), tb != bool(trans_b)
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb:
        raise ShapeError(
            f"sgemm: op(A) is {m}x{k} but op(B) is {kb}x{n}; the inner dimensions differ.")
    bias, kind, act, lo, hi = _epilogue(bias, bias_axis, activation, m, n)
    c, ldc = _out(c, m, n, beta)
    lib = library(isa)
    status = lib.raw.heli_sgemm(
        int(ta), int(tb), m, n, k, float(alpha), _ptr_of(a), lda, _ptr_of(b), ldb,
        float(beta), _ptr_of(c), ldc, _ptr_of(bias), kind, act, lo, hi, _threads(num_threads))
    if status:
        raise ExecutionError(f"sgemm of {m}x{n}x{k} could not allocate its packing buffers.")
    return c


@dataclass(frozen=True, eq=False)
class PackedB:
    """op(B) packed for one build of the library (its NR and KC)."""

    data: np.ndarray = field(repr=False)  # aligned float32 view
    k: int
    n: int
    isa: str


def _aligned_empty(count: int, align: int = 64) -> np.ndarray:
    raw = np.empty(count + align // 4, dtype=np.float32)
    offset = (-raw.ctypes.data % align) // 4
    return raw[offset:offset + count]


def pack_b(b: np.ndarray, *, trans_b: bool = False, isa: str | None = None) -> PackedB:
    """Pack the constant ``op(b)`` (K x N) once for :func:`sgemm_prepacked`."""
    b, tb, ldb = _as_matrix(b, "B")
    tb = tb != bool(trans_b)
    k, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    lib = library(isa)
    data = _aligned_empty(max(lib.raw.heli_sgemm_packed_b_size(n, k), 1))
    lib.raw.heli_sgemm_pack_b(int(tb), n, k, _ptr_of(b), ldb, _ptr_of(data))
    return PackedB(data, k, n, lib.isa)


def sgemm_prepacked(a: np.ndarray, packed: PackedB, c: np.ndarray | None = None, *,
                    alpha: float = 1.0, beta: float = 0.0, trans_a: bool = False,
                    bias: np.ndarray | None = None, bias_axis: str = "col", activation=None,
                    num_threads: int | None = None) -> np.ndarray:
    """:func:`sgemm` with a B packed by :func:`pack_b` (same ISA build)."""
    a, ta, lda = _as_matrix(a, "A")
    ta = ta != bool(trans_a)
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    if k != packed.k:
        raise ShapeError(
            f"sgemm: op(A) is {m}x{k} but the packed B is {packed.k}x{packed.n}; "
            "the inner dimensions differ.")
    n = packed.n
    bias, kind, act, lo, hi = _epilogue(bias, bias_axis, activation, m, n)
    c, ldc = _out(c, m, n, beta)
    lib = library(packed.isa)
    status = lib.raw.heli_sgemm_prepacked(
        int(ta), m, n, k, float(alpha), _ptr_of(a), lda, _ptr_of(packed.data), float(beta),
        _ptr_of(c), ldc, _ptr_of(bias), kind, act, lo, hi, _threads(num_threads))
    if status:
        raise ExecutionError(f"sgemm of {m}x{n}x{k} could not allocate its packing buffers.")
    return c
