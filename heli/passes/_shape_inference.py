"""Shape inference: bind input types and re-infer every value's type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from heli.ir._builder import rebuild
from heli.ir._graph import Graph
from heli.ir._types import Type
from heli.passes._pass import Pass


@dataclass
class ShapeInference(Pass):
    """Re-infer all types, with graph inputs given ``input_types`` (e.g. the
    concrete shapes a specialization binds)."""

    name = "shape-inference"
    description = "bind input shapes and infer every value's type"
    input_types: Mapping[str, Type] = field(default_factory=dict)

    def apply(self, graph: Graph) -> Graph:
        return rebuild(graph, input_types=self.input_types)
