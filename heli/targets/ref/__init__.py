"""The ``ref`` target: Heli's numpy golden model.

It runs every registered op, so it is also the fallback of last resort and
the oracle that every other target is tested against.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from heli.ir._graph import Graph, Node
from heli.target import SUPPORTED, CompileOptions, Executable, Support, Target
from heli.targets.ref._executor import GraphRunner, run_subgraph

__all__ = ["RefTarget", "RefExecutable", "GraphRunner", "run_subgraph"]


class RefExecutable(Executable):
    def __init__(self, graph: Graph, check_types: bool) -> None:
        self._runner = GraphRunner(graph, check_types=check_types)
        self._names = [v.name for v in graph.outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._names, self._runner.run(feeds), strict=True))


class RefTarget(Target):
    name = "ref"
    description = "numpy reference executor (golden model for every op)"

    def supports(self, node: Node) -> Support:
        return SUPPORTED  # every registered op has reference semantics

    def compile(self, graph: Graph, options: CompileOptions) -> Executable:
        return RefExecutable(graph, check_types=options.debug)
