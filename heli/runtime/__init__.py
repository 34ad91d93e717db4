"""Runtime: compiled models and their per-shape specializations."""

from heli.runtime._model import CompiledModel, Placement, Specialization, bind_shapes, check_feeds

__all__ = ["CompiledModel", "Placement", "Specialization", "bind_shapes", "check_feeds"]
