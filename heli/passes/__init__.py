"""Graph passes and the default pipeline.

The pipeline is one function listing the passes in order; each pass lives
in its own module.
"""

from __future__ import annotations

from collections.abc import Mapping

from heli.ir._types import Type
from heli.passes._canonicalize import Canonicalize
from heli.passes._constant_folding import ConstantFolding
from heli.passes._cse import CommonSubexpressionElimination
from heli.passes._dce import DeadCodeElimination
from heli.passes._fusion import Fusion, FusionRules
from heli.passes._pass import Pass, PassManager, PassRecord
from heli.passes._qdq_to_int import QdqToInt
from heli.passes._recognize import Recognize
from heli.passes._shape_inference import ShapeInference

__all__ = [
    "Canonicalize",
    "CommonSubexpressionElimination",
    "ConstantFolding",
    "DeadCodeElimination",
    "Fusion",
    "FusionRules",
    "Pass",
    "PassManager",
    "PassRecord",
    "QdqToInt",
    "Recognize",
    "ShapeInference",
    "all_passes",
    "default_pipeline",
]


def default_pipeline(input_types: Mapping[str, Type] | None = None) -> list[Pass]:
    """The passes every compile runs, in order."""
    return [
        ShapeInference(dict(input_types or {})),
        ConstantFolding(),
        Canonicalize(),
        Recognize(),
        CommonSubexpressionElimination(),
        ConstantFolding(),
        DeadCodeElimination(),
    ]


def all_passes() -> list[type[Pass]]:
    """Every pass class, for ``heli passes``."""
    return [ShapeInference, ConstantFolding, Canonicalize, Recognize,
            CommonSubexpressionElimination, DeadCodeElimination]
