"""The ``ref`` target: Heli's numpy golden model.

It runs every registered op, so it is also the fallback of last resort and
the oracle that every other target is tested against.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata

import numpy as np

from heli._errors import HeliError, TargetError
from heli.ir._graph import Graph, Node
from heli.target import SUPPORTED, CompileOptions, Executable, Support, Target
from heli.targets.ref._executor import GraphRunner, run_subgraph

__all__ = ["RefTarget", "RefExecutable", "GraphRunner", "run_subgraph"]


class RefExecutable(Executable):
    def __init__(self, graph: Graph, check_types: bool) -> None:
        self.graph = graph
        self._runner = GraphRunner(graph, check_types=check_types)
        self._names = [v.name for v in graph.outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._names, self._runner.run(feeds), strict=True))

    def serialize(self) -> bytes:
        """The segment graph as ONNX bytes: portable, and exactly what ``ref`` runs."""
        from heli.ir import to_onnx

        try:
            return to_onnx(self.graph).SerializeToString()
        except (ValueError, TypeError, KeyError) as error:
            raise TargetError(f"The ref target cannot save the graph {self.graph.name!r}: "
                              f"{type(error).__name__}: {error}.") from None


def _heli_version() -> str:
    try:
        return metadata.version("heli")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


class RefTarget(Target):
    name = "ref"
    description = "numpy reference executor (golden model for every op)"
    version = _heli_version()  # ref is part of Heli: its code changes with Heli's version

    def supports(self, node: Node) -> Support:
        return SUPPORTED  # every registered op has reference semantics

    def capabilities(self) -> dict[str, object]:
        from heli.ir import all_ops

        return {"ops": sorted({op.qualname for op in all_ops()}), "dtypes": "every ONNX type",
                "device": "host (numpy)"}

    def compile(self, graph: Graph, options: CompileOptions) -> Executable:
        return RefExecutable(graph, check_types=options.debug)

    def deserialize(self, payload: bytes, options: CompileOptions) -> Executable:
        from heli.frontend.onnx import import_onnx

        try:
            graph = import_onnx(payload)
        except HeliError as error:
            raise TargetError(f"The saved ref code is damaged: {error}") from None
        return RefExecutable(graph, check_types=options.debug)

    # host_fingerprint: the default {} -- numpy code runs the same on every host.
