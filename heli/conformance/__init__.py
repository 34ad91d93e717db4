"""Conformance: ONNX's per-operator cases and the `light` CNNs against any target."""

from heli.conformance._models import light_models, random_array, random_feeds, run_light_model
from heli.conformance._node import (
    CaseResult,
    case_op,
    compare_outputs,
    heli_runner,
    node_cases,
    onnxruntime_runner,
    run_case,
    run_cases,
)

__all__ = [
    "light_models",
    "random_array",
    "random_feeds",
    "run_light_model",
    "CaseResult",
    "case_op",
    "compare_outputs",
    "heli_runner",
    "node_cases",
    "onnxruntime_runner",
    "run_case",
    "run_cases",
]
