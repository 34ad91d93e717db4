"""Common-subexpression elimination: one node per identical computation.

Two nodes are the same computation when they run the same op with the same
attributes on the same operands.  Identical constants are merged first, so
that e.g. two ``Reshape`` s with equal shape constants also merge.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from heli.ir._builder import GraphBuilder, rebuild
from heli.ir._graph import Graph, Node, Value, free_names, subgraphs_of
from heli.ir._types import tensor_type_of
from heli.passes._pass import Pass


def _attr_key(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, _digest(value))
    if isinstance(value, tuple):
        return tuple(_attr_key(v) for v in value)
    if isinstance(value, float) and value != value:
        return ("nan",)
    return value


def _digest(array: np.ndarray) -> str:
    if array.dtype == object:
        return repr(array.tolist())
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).hexdigest()


@dataclass
class CommonSubexpressionElimination(Pass):
    name = "cse"
    description = "merge identical constants and nodes that compute the same thing"

    def apply(self, graph: Graph) -> Graph:
        graph = self._merge_constants(graph)
        seen: dict[Any, tuple[Value | None, ...]] = {}

        def visit(builder: GraphBuilder, node: Node, inputs: list[Value | None]):
            if not node.op.deterministic or any(subgraphs_of(node)):
                return None
            key = (
                node.op.domain, node.op.name, len(node.outputs),
                tuple(v.name if v is not None else None for v in inputs),
                tuple(sorted((k, _attr_key(v)) for k, v in node.attrs.items())),
            )
            if key in seen:
                return seen[key]
            outputs = builder.add_node(
                node.op, inputs, node.attrs, name=node.name,
                output_names=[o.name if o is not None else None for o in node.outputs],
            )
            if all(o is not None for o in outputs):
                seen[key] = outputs
            return outputs

        return rebuild(graph, visit)

    @staticmethod
    def _merge_constants(graph: Graph) -> Graph:
        first: dict[Any, str] = {}
        alias: dict[str, str] = {}
        for name, array in graph.constants.items():
            key = (array.dtype.str, array.shape, _digest(array))
            if key in first:
                alias[name] = first[key]
            else:
                first[key] = name
        if not alias:
            return graph
        # Graph outputs keep their names; subgraphs read constants by name.
        keep = {v.name for v in graph.outputs}
        keep.update(n for node in graph.nodes for sub in subgraphs_of(node)
                    for n in free_names(sub))
        alias = {k: v for k, v in alias.items() if k not in keep}
        if not alias:
            return graph
        def swap(v: Value | None) -> Value | None:
            if v is None or v.name not in alias:
                return v
            kept = alias[v.name]
            return Value(kept, tensor_type_of(graph.constants[kept]))

        nodes = tuple(n.replace(inputs=tuple(map(swap, n.inputs))) for n in graph.nodes)
        constants = {k: v for k, v in graph.constants.items() if k not in alias}
        return graph.replace(nodes=nodes, constants=constants)
