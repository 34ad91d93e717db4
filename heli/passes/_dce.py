"""Dead-code elimination: drop nodes and constants nothing reads."""

from __future__ import annotations

from dataclasses import dataclass

from heli.ir._graph import Graph, reads_of
from heli.passes._pass import Pass


@dataclass
class DeadCodeElimination(Pass):
    name = "dce"
    description = "remove nodes whose outputs are never used, and unused constants"

    def apply(self, graph: Graph) -> Graph:
        live = {v.name for v in graph.outputs}
        kept = []
        for node in reversed(graph.nodes):
            if node.op.deterministic and not any(
                o is not None and o.name in live for o in node.outputs
            ):
                continue
            kept.append(node)
            live.update(reads_of(node))
        kept.reverse()
        constants = {k: v for k, v in graph.constants.items() if k in live}
        if len(kept) == len(graph.nodes) and len(constants) == len(graph.constants):
            return graph
        return graph.replace(nodes=tuple(kept), constants=constants)
