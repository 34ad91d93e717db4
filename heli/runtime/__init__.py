"""Runtime: compiled models, their per-shape specializations, memory plans and
saved (``.heli``) artifacts."""

from heli.runtime._artifact import LoadedModel, is_artifact, load, save_compiled
from heli.runtime._memory import Lifetime, MemoryPlan, plan_graph_memory, plan_memory
from heli.runtime._model import (
    CompiledModel,
    Placement,
    Specialization,
    Stage,
    bind_shapes,
    check_feeds,
)

__all__ = [
    "CompiledModel",
    "Lifetime",
    "LoadedModel",
    "MemoryPlan",
    "Placement",
    "Specialization",
    "Stage",
    "bind_shapes",
    "check_feeds",
    "is_artifact",
    "load",
    "plan_graph_memory",
    "plan_memory",
    "save_compiled",
]
