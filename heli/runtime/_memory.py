"""Static memory planning: one arena for every intermediate tensor.

Each tensor lives from the step that defines it to the last step that reads
it (steps are node indices in execution order, both ends included).  Tensors
whose lives do not overlap may share bytes.  The planner is the classic
"greedy by size, best fit" heuristic (as in TFLite's arena planner): place
the largest tensors first, each in the smallest gap left between the tensors
already placed that are live at the same time, or on top of them.  Offsets
and sizes are rounded up to ``alignment`` bytes so every tensor starts on a
cache line / SIMD boundary.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from heli._errors import ShapeError
from heli.ir._graph import Graph, reads_of
from heli.ir._types import TensorType

__all__ = ["Lifetime", "MemoryPlan", "plan_memory", "plan_graph_memory", "graph_lifetimes"]

DEFAULT_ALIGNMENT = 64


@dataclass(frozen=True)
class Lifetime:
    """A tensor of ``size`` bytes, live from step ``first`` to step ``last`` (inclusive)."""

    name: str
    size: int
    first: int
    last: int

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"Tensor {self.name!r} has a negative size ({self.size}).")
        if self.last < self.first:
            raise ValueError(f"Tensor {self.name!r} is last used (step {self.last}) before "
                             f"it is defined (step {self.first}).")

    def overlaps(self, other: Lifetime) -> bool:
        """Whether both tensors are live at some step."""
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class MemoryPlan:
    """Where each tensor lives in the arena, and how big the arena is."""

    offsets: Mapping[str, int]
    lifetimes: tuple[Lifetime, ...]
    alignment: int
    peak: int  # arena bytes: the highest (aligned) end of any tensor
    naive: int  # bytes if every tensor had its own (aligned) buffer
    skipped: tuple[str, ...] = field(default=())  # values not planned (sequences, optionals)

    def end(self, name: str) -> int:
        """One past the last (aligned) byte of tensor ``name``."""
        life = next(t for t in self.lifetimes if t.name == name)
        return self.offsets[name] + align(life.size, self.alignment)

    def live_bytes(self) -> int:
        """The largest total (aligned) size of tensors live at one step: a lower bound of
        ``peak`` that no placement can beat."""
        return max_live_bytes(self.lifetimes, self.alignment)

    @property
    def savings(self) -> float:
        """The fraction of the naive footprint that reuse saves."""
        return 1.0 - self.peak / self.naive if self.naive else 0.0


def align(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


def max_live_bytes(lifetimes: Iterable[Lifetime], alignment: int = 1) -> int:
    """The largest total size of tensors that are live at the same step."""
    events: list[tuple[int, int]] = []
    for t in lifetimes:
        size = align(t.size, alignment)
        events.append((t.first, size))
        events.append((t.last + 1, -size))
    best = current = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):  # frees before allocations
        current += delta
        best = max(best, current)
    return best


def plan_memory(lifetimes: Sequence[Lifetime], alignment: int = DEFAULT_ALIGNMENT) -> MemoryPlan:
    """Offsets in one arena such that no two tensors live at the same step overlap."""
    if alignment < 1:
        raise ValueError(f"The alignment must be a positive number of bytes, not {alignment}.")
    names = [t.name for t in lifetimes]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"Tensor {duplicate!r} appears twice in the memory plan.")
    offsets: dict[str, int] = {}
    placed: list[tuple[int, int, Lifetime]] = []  # (offset, aligned size, tensor)
    # Largest first: big tensors are the hardest to fit; ties by definition order
    # so the plan does not depend on the order of the input list.
    for tensor in sorted(lifetimes, key=lambda t: (-t.size, t.first, t.last, t.name)):
        size = align(tensor.size, alignment)
        if size == 0:
            offsets[tensor.name] = 0  # an empty tensor takes no bytes
            continue
        busy = sorted((o, o + s) for o, s, other in placed if other.overlaps(tensor))
        offsets[tensor.name] = _best_fit(busy, size)
        placed.append((offsets[tensor.name], size, tensor))
    peak = max((o + s for o, s, _ in placed), default=0)
    naive = sum(align(t.size, alignment) for t in lifetimes)
    return MemoryPlan(MappingProxyType(offsets), tuple(lifetimes), alignment, peak, naive)


def _best_fit(busy: list[tuple[int, int]], size: int) -> int:
    """The start of the smallest gap of at least ``size`` bytes between the busy ranges
    (sorted by start), or the top of them when no gap is big enough."""
    best, best_gap = None, math.inf
    top = 0
    for start, end in busy:
        gap = start - top
        if size <= gap < best_gap:
            best, best_gap = top, gap
        top = max(top, end)
    return top if best is None else best


def graph_lifetimes(graph: Graph) -> tuple[list[Lifetime], list[str]]:
    """The lifetime of every value the graph's nodes define (steps = node indices).

    Graph inputs and constants live outside the arena.  Graph outputs live to
    the end (one step past the last node), since the caller reads them.  Values
    that are not tensors (sequences, optionals) are returned separately: their
    size is not known statically.
    """
    last_use: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        for name in reads_of(node):  # operands and values captured by subgraphs
            last_use[name] = index
    end = len(graph.nodes)
    for value in graph.outputs:
        last_use[value.name] = end
    lifetimes: list[Lifetime] = []
    skipped: list[str] = []
    for index, node in enumerate(graph.nodes):
        for value in node.outputs:
            if value is None or value.name in graph.constants:
                continue
            vtype = value.type
            if not isinstance(vtype, TensorType):
                skipped.append(value.name)
                continue
            if vtype.shape is None or not vtype.is_static:
                raise ShapeError(
                    f"The value {value.name!r} has the shape {vtype}, which is not static, so "
                    "its memory cannot be planned; give static input shapes."
                )
            size = math.prod(vtype.shape) * vtype.dtype.itemsize
            last = max(index, last_use.get(value.name, index))  # unread: live one step
            lifetimes.append(Lifetime(value.name, size, index, last))
    return lifetimes, skipped


def plan_graph_memory(graph: Graph, alignment: int = DEFAULT_ALIGNMENT) -> MemoryPlan:
    """The arena plan of a static-shaped graph's intermediate tensors."""
    lifetimes, skipped = graph_lifetimes(graph)
    plan = plan_memory(lifetimes, alignment)
    return MemoryPlan(plan.offsets, plan.lifetimes, plan.alignment, plan.peak, plan.naive,
                      tuple(skipped))
