"""The pass interface and the pass manager.

A pass is a small object: a ``name``, its options as dataclass fields, and
one :meth:`Pass.apply` from graph to graph.  The manager runs a list of
passes, times each, and verifies the IR after each one in debug mode
(``debug=True``, ``--debug`` or ``HELI_VERIFY=1``).
"""

from __future__ import annotations

import abc
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from heli._errors import VerificationError
from heli.ir._graph import Graph
from heli.ir._verify import verify


class Pass(abc.ABC):
    """A graph-to-graph transformation."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def apply(self, graph: Graph) -> Graph:
        """Return the transformed graph (``graph`` itself if nothing changed)."""


@dataclass
class PassRecord:
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int


@dataclass
class PassManager:
    """Runs passes in order; ``records`` holds per-pass timings afterwards."""

    passes: Sequence[Pass]
    verify: bool = field(default_factory=lambda: os.environ.get("HELI_VERIFY", "") not in ("", "0"))
    records: list[PassRecord] = field(default_factory=list)

    def run(self, graph: Graph) -> Graph:
        if self.verify:
            verify(graph)
        for p in self.passes:
            start = time.perf_counter()
            before = len(graph.nodes)
            graph = p.apply(graph)
            self.records.append(PassRecord(p.name, time.perf_counter() - start, before,
                                           len(graph.nodes)))
            if self.verify:
                try:
                    verify(graph)
                except VerificationError as error:
                    raise VerificationError(f"After pass {p.name!r}: {error}") from None
        return graph
