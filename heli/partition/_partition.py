"""Partitioning: assign each node to the first target that supports it.

Targets are asked in order of preference (the requested target first, then
its fallbacks).  Consecutive nodes on the same target form one segment,
which is compiled as one subgraph by that target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from heli._errors import UnsupportedError
from heli.ir._graph import Graph, Node, Value, reads_of
from heli.target import Target


@dataclass(frozen=True)
class Segment:
    """A run of consecutive nodes placed on one target, as its own graph."""

    target: Target
    graph: Graph
    nodes: tuple[Node, ...]


def node_label(node: Node) -> str:
    first = next((o.name for o in node.outputs if o is not None), "")
    return node.name or first or node.op.name


def assign(graph: Graph, targets: Sequence[Target]) -> tuple[list[Target], dict[str, str]]:
    """The target of each node, and why the first target refused the others."""
    placed: list[Target] = []
    refused: dict[str, str] = {}
    for node in graph.nodes:
        reasons = []
        for target in targets:
            answer = target.supports(node)
            if answer:
                placed.append(target)
                break
            reasons.append(f"{target.name}: {answer.reason}")
        else:
            raise UnsupportedError(
                f"No target can run {node.op.name} node {node_label(node)!r} "
                f"({'; '.join(reasons)})."
            )
        if reasons:
            refused[node_label(node)] = reasons[0].split(": ", 1)[1]
    return placed, refused


def partition(graph: Graph, targets: Sequence[Target]) -> tuple[list[Segment], dict[str, str]]:
    """Split ``graph`` into per-target segments, in execution order."""
    placed, refused = assign(graph, targets)
    runs: list[tuple[Target, list[Node]]] = []
    for node, target in zip(graph.nodes, placed, strict=True):
        if runs and runs[-1][0] is target:
            runs[-1][1].append(node)
        else:
            runs.append((target, [node]))
    needed_later = _needed_after(graph, [nodes for _, nodes in runs])
    segments = []
    for index, (target, nodes) in enumerate(runs):
        segments.append(Segment(target, _segment_graph(graph, nodes, needed_later[index], index),
                                tuple(nodes)))
    return segments, refused


def _needed_after(graph: Graph, runs: list[list[Node]]) -> list[set[str]]:
    """For each run, the names read after it (later runs or graph outputs)."""
    needed: set[str] = {v.name for v in graph.outputs}
    result: list[set[str]] = []
    for nodes in reversed(runs):
        result.append(set(needed))
        for node in nodes:
            needed.update(reads_of(node))
    return list(reversed(result))


def _segment_graph(graph: Graph, nodes: list[Node], needed: set[str], index: int) -> Graph:
    produced = {o.name: o for n in nodes for o in n.outputs if o is not None}
    inputs: dict[str, Value] = {}
    constants = {}
    known = graph.values()
    for node in nodes:
        for name in reads_of(node):
            if name in produced:
                continue
            if name in graph.constants:
                constants[name] = graph.constants[name]
            else:
                inputs.setdefault(name, known[name])
    outputs = [v for name, v in produced.items() if name in needed]
    return Graph(tuple(inputs.values()), tuple(outputs), tuple(nodes), constants,
                 name=f"{graph.name}_part{index}", opset=graph.opset)
