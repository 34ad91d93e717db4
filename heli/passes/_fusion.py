"""Fusion: group nodes that a target runs as one kernel into ``heli:FusedGroup``
nodes.

What may fuse is the target's business, so the pass takes
:class:`FusionRules` (a target builds them from its capability data; the
pass never asks which target it serves).  Two kinds of group:

* **anchor**: a Conv / MatMul / Gemm (``rules.anchors``) followed by the
  elementwise ops that consume its result (``rules.epilogue``: bias add,
  activation, a residual add...), each result the anchor's shape;
* **elementwise**: two or more elementwise ops (``rules.elementwise``), each
  result broadcasting to the last one's shape.

A group grows from its first node by taking, one at a time, the earliest
consumer of a value it makes, as long as that consumer fuses; it keeps the
largest prefix whose only value used outside is its last node's result (so
the fused node can stand where that last node stood).  Every node of a
group must have float types the rules accept and static shapes.  The body
of the fused node holds the group's nodes and the constants they read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from heli.ir._graph import Graph, Node, Value
from heli.ir._ops import get_op
from heli.ir._types import DType, TensorType
from heli.passes._pass import Pass


@dataclass(frozen=True)
class FusionRules:
    """What a target can run fused (see the module docstring)."""

    anchors: frozenset[str] = frozenset()
    epilogue: frozenset[str] = frozenset()
    elementwise: frozenset[str] = frozenset()
    dtypes: frozenset[DType] = frozenset({DType.FLOAT32})
    max_nodes: int = 64
    #: The target's extra check of one node (attributes, arity...).
    accepts: Callable[[Node], bool] = field(default=lambda node: True)


def _static(value: Value | None, dtypes: frozenset[DType]) -> bool:
    t = value.type if value is not None else None
    return isinstance(t, TensorType) and t.is_static and t.dtype in dtypes


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(reversed(shape), reversed(target), strict=False))


@dataclass
class Fusion(Pass):
    name = "fusion"
    description = "group anchor+epilogue and elementwise chains into heli:FusedGroup nodes"

    rules: FusionRules = field(default_factory=FusionRules)

    def apply(self, graph: Graph) -> Graph:
        rules = self.rules
        position = {id(n): i for i, n in enumerate(graph.nodes)}
        users: dict[str, list[Node]] = {}
        for node in graph.nodes:
            for v in node.inputs:
                if v is not None:
                    users.setdefault(v.name, []).append(node)
        outputs = {v.name for v in graph.outputs}

        def fusible(node: Node, ops: frozenset[str]) -> bool:
            if node.op.domain or node.op.name not in ops or len(node.outputs) != 1:
                return False
            values = [v for v in node.inputs if v is not None] + [node.outputs[0]]
            return all(_static(v, rules.dtypes) for v in values) and rules.accepts(node)

        taken: set[int] = set()
        groups: list[tuple[str, list[Node]]] = []
        for node in graph.nodes:
            if id(node) in taken:
                continue
            if fusible(node, rules.anchors):
                kind, ops = "anchor", rules.epilogue
            elif fusible(node, rules.elementwise):
                kind, ops = "elementwise", rules.elementwise
            else:
                continue
            group = self._grow(node, ops, fusible, users, outputs, position, taken,
                               anchor=kind == "anchor")
            if len(group) > 1:
                groups.append((kind, group))
                taken.update(id(n) for n in group)
        if not groups:
            return graph
        return self._rewrite(graph, groups)

    def _grow(self, first: Node, ops: frozenset[str], fusible, users, outputs, position,
              taken, *, anchor: bool) -> list[Node]:
        group = [first]
        members = {id(first)}
        best = [first]
        shape = first.outputs[0].type.shape
        while len(group) < self.rules.max_nodes:
            made = {o.name for n in group for o in n.outputs if o is not None}
            outside = [u for name in made for u in users.get(name, []) if id(u) not in members]
            if not outside:
                break
            candidate = min(outside, key=lambda n: position[id(n)])
            if id(candidate) in taken or not fusible(candidate, ops):
                break
            out_shape = candidate.outputs[0].type.shape
            if anchor and out_shape != shape:
                break
            if not anchor and not _broadcasts_to(shape, out_shape):
                break
            group.append(candidate)
            members.add(id(candidate))
            shape = out_shape
            if self._closed(group, members, users, outputs):
                best = list(group)
        return best

    @staticmethod
    def _closed(group: list[Node], members: set[int], users, outputs) -> bool:
        """Only the last node's result is used outside the group."""
        last = group[-1].outputs[0].name
        final_shape = group[-1].outputs[0].type.shape
        for node in group:
            value = node.outputs[0]
            if value.name == last:
                continue
            if value.name in outputs:
                return False
            if any(id(u) not in members for u in users.get(value.name, [])):
                return False
            if not _broadcasts_to(value.type.shape, final_shape):
                return False
        return True

    def _rewrite(self, graph: Graph, groups: list[tuple[str, list[Node]]]) -> Graph:
        fused_op = get_op("FusedGroup", "heli")
        at_last: dict[int, Node] = {}
        dropped: set[int] = set()
        values = graph.values()
        for index, (kind, group) in enumerate(groups):
            made = {o.name for n in group for o in n.outputs if o is not None}
            ext_inputs: list[Value] = []
            constants = {}
            for node in group:
                for v in node.inputs:
                    if v is None or v.name in made:
                        continue
                    if v.name in graph.constants:
                        constants[v.name] = graph.constants[v.name]
                    elif all(x.name != v.name for x in ext_inputs):
                        ext_inputs.append(values.get(v.name, v))
            result = group[-1].outputs[0]
            anchor = group[0]
            label = anchor.name or result.name
            body = Graph(tuple(ext_inputs), (result,), tuple(group), constants,
                         name=f"fused_{index}_{label}", opset=graph.opset)
            fused = Node(fused_op, tuple(ext_inputs), (result,),
                         {"body": body, "kind": kind}, name=f"fused_{label}")
            at_last[id(group[-1])] = fused
            dropped.update(id(n) for n in group[:-1])
        nodes = []
        for node in graph.nodes:
            if id(node) in dropped:
                continue
            nodes.append(at_last.get(id(node), node))
        read = {v.name for n in nodes for v in n.inputs if v is not None}
        read |= {v.name for v in graph.outputs}
        constants = {k: v for k, v in graph.constants.items() if k in read}
        return graph.replace(nodes=tuple(nodes), constants=constants)
