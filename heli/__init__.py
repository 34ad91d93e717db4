"""Heli (合力): an open, vendor-neutral AI compiler.

    >>> import heli
    >>> model = heli.compile("model.onnx", target="ref")
    >>> outputs = model.run({"x": x})
"""

from heli._api import FallbackWarning, compile
from heli._errors import (
    ExecutionError,
    HeliError,
    InputError,
    ModelLoadError,
    ShapeError,
    TargetError,
    UnsupportedError,
    VerificationError,
)
from heli.runtime import CompiledModel, load

__version__ = "0.1.0"

__all__ = [
    "CompiledModel",
    "ExecutionError",
    "FallbackWarning",
    "HeliError",
    "InputError",
    "ModelLoadError",
    "ShapeError",
    "TargetError",
    "UnsupportedError",
    "VerificationError",
    "__version__",
    "compile",
    "load",
]
