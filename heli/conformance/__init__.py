"""Conformance: ONNX's per-operator cases, the `light` CNNs and the real test models
against any target, and scorecards of the results."""

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
from heli.conformance._scorecard import (
    REAL_MODELS,
    ModelScore,
    RealModel,
    light_as_real_model,
    node_costs,
    placement_shares,
    real_models,
    render_markdown,
    run_real_model,
    scorecard,
    write_report,
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
    "REAL_MODELS",
    "ModelScore",
    "RealModel",
    "light_as_real_model",
    "node_costs",
    "placement_shares",
    "real_models",
    "render_markdown",
    "run_real_model",
    "scorecard",
    "write_report",
]
