"""Tensor types: element dtypes, (possibly symbolic) shapes, and container types.

A dimension is an ``int`` (static) or a ``str`` (symbolic, e.g. ``"batch"``).
Unknown dimensions from ONNX get a fresh symbolic name so that later binding
can still tell them apart.  A shape of ``None`` means the rank is unknown.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

import ml_dtypes
import numpy as np

Dim = int | str
Shape = tuple[Dim, ...]


class DType(enum.Enum):
    """Element types, named as numpy / ml_dtypes name them.

    The value is ``(name, onnx TensorProto code)``.
    """

    FLOAT32 = ("float32", 1)
    UINT8 = ("uint8", 2)
    INT8 = ("int8", 3)
    UINT16 = ("uint16", 4)
    INT16 = ("int16", 5)
    INT32 = ("int32", 6)
    INT64 = ("int64", 7)
    STRING = ("string", 8)
    BOOL = ("bool", 9)
    FLOAT16 = ("float16", 10)
    FLOAT64 = ("float64", 11)
    UINT32 = ("uint32", 12)
    UINT64 = ("uint64", 13)
    COMPLEX64 = ("complex64", 14)
    COMPLEX128 = ("complex128", 15)
    BFLOAT16 = ("bfloat16", 16)
    FLOAT8E4M3FN = ("float8_e4m3fn", 17)
    FLOAT8E4M3FNUZ = ("float8_e4m3fnuz", 18)
    FLOAT8E5M2 = ("float8_e5m2", 19)
    FLOAT8E5M2FNUZ = ("float8_e5m2fnuz", 20)
    UINT4 = ("uint4", 21)
    INT4 = ("int4", 22)
    FLOAT4E2M1 = ("float4_e2m1fn", 23)
    FLOAT8E8M0 = ("float8_e8m0fnu", 24)
    UINT2 = ("uint2", 25)
    INT2 = ("int2", 26)
    FLOAT6E2M3 = ("float6_e2m3fn", 27)
    FLOAT6E3M2 = ("float6_e3m2fn", 28)

    @property
    def onnx(self) -> int:
        """The ONNX ``TensorProto.DataType`` code."""
        return self.value[1]

    @property
    def np(self) -> np.dtype:
        """The numpy dtype used to hold values of this type."""
        return _NUMPY[self]

    @property
    def is_float(self) -> bool:
        return self in _FLOATS

    @property
    def is_int(self) -> bool:
        return self in _INTS

    @property
    def itemsize(self) -> int:
        return self.np.itemsize

    @classmethod
    def from_onnx(cls, code: int) -> DType:
        try:
            return _BY_ONNX[code]
        except KeyError:
            from heli._errors import UnsupportedError

            raise UnsupportedError(f"ONNX data type code {code!r} is not supported.") from None

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> DType:
        dtype = np.dtype(dtype)
        if dtype.kind in "OUS":
            return DType.STRING
        try:
            return _BY_NUMPY[dtype]
        except KeyError:
            from heli._errors import UnsupportedError

            raise UnsupportedError(
                f"The numpy dtype {dtype.name!r} has no Heli equivalent."
            ) from None

    def __repr__(self) -> str:
        return f"DType.{self.name}"

    def __str__(self) -> str:
        return self.value[0]


_NUMPY_NATIVE = {
    DType.FLOAT32, DType.UINT8, DType.INT8, DType.UINT16, DType.INT16, DType.INT32,
    DType.INT64, DType.BOOL, DType.FLOAT16, DType.FLOAT64, DType.UINT32, DType.UINT64,
    DType.COMPLEX64, DType.COMPLEX128,
}
_NUMPY: dict[DType, np.dtype] = {d: np.dtype(d.value[0]) for d in _NUMPY_NATIVE}
_NUMPY[DType.STRING] = np.dtype(object)
for _d in DType:
    if _d not in _NUMPY:
        _NUMPY[_d] = np.dtype(getattr(ml_dtypes, _d.value[0]))
_BY_ONNX = {d.onnx: d for d in DType}
_BY_NUMPY = {v: k for k, v in _NUMPY.items() if k is not DType.STRING}
_INTS = {
    DType.UINT8, DType.INT8, DType.UINT16, DType.INT16, DType.INT32, DType.INT64,
    DType.UINT32, DType.UINT64, DType.UINT4, DType.INT4, DType.UINT2, DType.INT2,
}
_FLOATS = {
    DType.FLOAT32, DType.FLOAT16, DType.FLOAT64, DType.BFLOAT16, DType.FLOAT8E4M3FN,
    DType.FLOAT8E4M3FNUZ, DType.FLOAT8E5M2, DType.FLOAT8E5M2FNUZ, DType.FLOAT4E2M1,
    DType.FLOAT8E8M0, DType.FLOAT6E2M3, DType.FLOAT6E3M2,
}


class Type:
    """Base of value types (tensors, sequences, optionals)."""


@dataclass(frozen=True)
class TensorType(Type):
    """A tensor of ``dtype`` with ``shape`` (``None``: rank unknown)."""

    dtype: DType
    shape: Shape | None

    def __post_init__(self) -> None:
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        """True when every dimension is a known integer."""
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(d for d in self.shape or () if isinstance(d, str))

    def numel(self) -> int | None:
        if not self.is_static:
            return None
        return int(np.prod(self.shape, dtype=np.int64))

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.dtype}[?]"
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"


@dataclass(frozen=True)
class SequenceType(Type):
    """An ONNX sequence of tensors."""

    elem: Type

    def __str__(self) -> str:
        return f"seq<{self.elem}>"


@dataclass(frozen=True)
class OptionalType(Type):
    """An ONNX optional (a value that may be absent)."""

    elem: Type

    def __str__(self) -> str:
        return f"optional<{self.elem}>"


def tensor_type_of(array: np.ndarray) -> TensorType:
    """The exact type of a concrete array."""
    return TensorType(DType.from_numpy(array.dtype), tuple(int(d) for d in array.shape))


def shape_of(dims: Iterable[Dim]) -> Shape:
    return tuple(dims)
