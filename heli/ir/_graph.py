"""Values, nodes and graphs: Heli's graph IR.

Everything here is immutable.  Nodes hold their operands as tuples of
:class:`Value`; a graph holds its nodes in topological order.  To change a
graph, build a new one (see :mod:`heli.ir._builder`); ``replace()`` gives a
copy with some fields changed and rejects fields that do not exist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from heli._replace import Replaceable
from heli.ir._types import TensorType, Type

if TYPE_CHECKING:
    from heli.ir._ops import OpDef


_Replaceable = Replaceable


def freeze(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only copy of ``mapping`` (lists become tuples)."""
    items = {k: tuple(v) if isinstance(v, list) else v for k, v in (mapping or {}).items()}
    return MappingProxyType(items)


@dataclasses.dataclass(frozen=True)
class Value(_Replaceable):
    """A named SSA value with its type."""

    name: str
    type: Type

    @property
    def tensor_type(self) -> TensorType:
        if not isinstance(self.type, TensorType):
            raise TypeError(f"Value {self.name!r} has type {self.type}, not a tensor type.")
        return self.type

    def __str__(self) -> str:
        return f"%{self.name}"


@dataclasses.dataclass(frozen=True, eq=False)
class Node(_Replaceable):
    """One operation.  Omitted optional operands are ``None``."""

    op: OpDef
    inputs: tuple[Value | None, ...]
    outputs: tuple[Value | None, ...]
    attrs: Mapping[str, Any] = dataclasses.field(default_factory=lambda: freeze({}))
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if not isinstance(self.attrs, MappingProxyType):
            object.__setattr__(self, "attrs", freeze(self.attrs))

    def attr(self, name: str) -> Any:
        """The attribute's value, or the op's default when it was not set."""
        if name in self.attrs:
            return self.attrs[name]
        return self.op.attr_default(name)

    @property
    def op_type(self) -> str:
        return self.op.name

    def __repr__(self) -> str:
        return f"Node({self.op.qualname}, name={self.name!r})"


@dataclasses.dataclass(frozen=True, eq=False)
class Graph(_Replaceable):
    """A function from ``inputs`` to ``outputs``.

    ``constants`` maps value names to their data (ONNX initializers and folded
    constants).  ``nodes`` are in topological order.  A subgraph (the body of an
    If or Loop) may also use values of the graphs enclosing it.
    """

    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    nodes: tuple[Node, ...]
    constants: Mapping[str, np.ndarray] = dataclasses.field(default_factory=lambda: freeze({}))
    name: str = "main"
    opset: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        if not isinstance(self.constants, MappingProxyType):
            object.__setattr__(self, "constants", freeze(self.constants))

    # -- queries -------------------------------------------------------------
    def producers(self) -> dict[str, Node]:
        """Map from value name to the node that defines it."""
        return {out.name: node for node in self.nodes for out in node.outputs if out is not None}

    def users(self) -> dict[str, list[Node]]:
        """Map from value name to the nodes (of this graph) that read it."""
        result: dict[str, list[Node]] = {}
        for node in self.nodes:
            for value in node.inputs:
                if value is not None:
                    result.setdefault(value.name, []).append(node)
        return result

    def values(self) -> dict[str, Value]:
        """Every value defined in this graph, by name."""
        found = {v.name: v for v in self.inputs}
        for node in self.nodes:
            for v in node.inputs:
                if v is not None and v.name in self.constants:
                    found.setdefault(v.name, v)
            for v in node.outputs:
                if v is not None:
                    found[v.name] = v
        for v in self.outputs:
            found.setdefault(v.name, v)
        return found

    def use_counts(self) -> dict[str, int]:
        """How often each value is read by a node of this graph; a graph
        output counts as one more read (a use no rewrite may absorb)."""
        counts: dict[str, int] = {}
        for node in self.nodes:
            for value in node.inputs:
                if value is not None:
                    counts[value.name] = counts.get(value.name, 0) + 1
        for value in self.outputs:
            counts[value.name] = counts.get(value.name, 0) + 1
        return counts

    def walk(self) -> Iterator[Node]:
        """Every node, including those in subgraphs, depth first."""
        for node in self.nodes:
            yield node
            for sub in subgraphs_of(node):
                yield from sub.walk()

    def __repr__(self) -> str:
        return (
            f"Graph({self.name!r}, {len(self.inputs)} inputs, {len(self.outputs)} outputs, "
            f"{len(self.nodes)} nodes, {len(self.constants)} constants)"
        )

    def __str__(self) -> str:
        from heli.ir._printer import format_graph

        return format_graph(self)


def subgraphs_of(node: Node) -> Iterator[Graph]:
    """The graphs held in a node's attributes (If branches, Loop bodies...)."""
    for value in node.attrs.values():
        if isinstance(value, Graph):
            yield value
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, Graph):
                    yield item


def reads_of(node: Node) -> list[str]:
    """Names a node reads: its operands and the outer values its subgraphs use."""
    names = [v.name for v in node.inputs if v is not None]
    for sub in subgraphs_of(node):
        names.extend(free_names(sub))
    return names


def free_names(graph: Graph) -> list[str]:
    """Names a graph reads but does not define (values of enclosing graphs)."""
    defined = {v.name for v in graph.inputs} | set(graph.constants)
    free: list[str] = []
    for node in graph.nodes:
        for name in reads_of(node):
            if name not in defined and name not in free:
                free.append(name)
        defined.update(v.name for v in node.outputs if v is not None)
    free.extend(v.name for v in graph.outputs if v.name not in defined and v.name not in free)
    return free
