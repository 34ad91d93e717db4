"""An opt-in profiler of the cpu executable (``HELI_PROFILE=1``).

With the variable set when the process starts, :class:`CpuExecutable` runs
through :meth:`Profile.run`: each step is timed and its time added to its
*kind* (``MatMul+Add+Gelu`` for a fused anchor group, ``ew:Add+Mul`` for an
elementwise group, ``Reshape`` for a host step...); the time a run spends
outside the steps (the run loop itself: the environment, frees) is its own
row.  At exit the table goes to stderr, most expensive kind first, per run.
Unset, nothing of this is imported and the run loop is unchanged.
"""

from __future__ import annotations

import atexit
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from heli.ir._graph import Node


def step_kind(node: Node) -> str:
    """A short name for what the step of ``node`` does."""
    if node.op.domain == "heli" and node.op.name == "FusedGroup":
        names = [n.op.name for n in node.attr("body").nodes]
        if node.attr("kind") == "anchor":
            return "+".join(names)
        return "ew:" + "+".join(sorted(set(names)))
    return node.op.qualname


class Profile:
    """Seconds and calls per step kind, over every profiled run of the process."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.runs = 0
        self.total = 0.0
        self._registered = False

    def add(self, kind: str, seconds: float) -> None:
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
        self.calls[kind] = self.calls.get(kind, 0) + 1

    def run(self, exe: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._registered:
            self._registered = True
            atexit.register(self.report)
        kinds = getattr(exe, "_kinds", None)
        if kinds is None:
            kinds = exe._kinds = [step_kind(n) for n in exe.graph.nodes]
        clock = time.perf_counter
        start = clock()
        inside = 0.0
        env = exe._begin(feeds)
        for kind, (step, frees) in zip(kinds, exe._steps, strict=True):
            t0 = clock()
            step(env)
            t1 = clock()
            self.add(kind, t1 - t0)
            inside += t1 - t0
            for name in frees:
                env.pop(name, None)
        result = exe._finish(env)
        elapsed = clock() - start
        self.add("(run loop)", elapsed - inside)
        self.runs += 1
        self.total += elapsed
        return result

    def table(self) -> str:
        runs = max(self.runs, 1)
        lines = [f"heli cpu profile: {self.runs} run(s) of cpu segments, "
                 f"{1e3 * self.total / runs:.3f} ms per run",
                 f"{'ms/run':>9} {'%':>6} {'calls/run':>9}  kind"]
        for kind, sec in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
            share = 100.0 * sec / self.total if self.total else 0.0
            lines.append(f"{1e3 * sec / runs:9.3f} {share:6.1f} {self.calls[kind] / runs:9.1f}"
                         f"  {kind}")
        return "\n".join(lines)

    def report(self) -> None:
        if self.runs:
            print(self.table(), file=sys.stderr)


#: The process's profile (the executables of every compiled model add to it).
PROFILE = Profile()
