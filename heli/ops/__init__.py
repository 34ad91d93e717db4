"""Heli's op library: every op's attributes, type inference and numpy
reference semantics, registered in :mod:`heli.ir`'s op registry on import.

One module per family of ops.  The semantics follow the newest ONNX opset;
the ONNX importer upgrades older forms (see ``heli.frontend._upgrade``).
"""

# Importing a module registers its ops.
from heli.ops import (  # noqa: F401
    _attention,
    _cast,
    _contrib_quant,
    _control,
    _core,
    _elementwise,
    _fused,
    _misc,
    _nn,
    _norm,
    _npu_int,
    _quant,
    _reduce,
    _resize,
    _rnn,
    _sequence,
    _shape,
    _signal,
    _string,
)

__all__: list[str] = []
