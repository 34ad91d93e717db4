"""One preallocated arena for a cpu executable's intermediate tensors.

Allocating every step's result with ``np.empty`` costs more than it seems on
models with large activations: buffers of megabytes come from fresh
``mmap``'d pages, and touching them page-faults every run (PP-OCRv4 det:
about 7,700 faults and a quarter of its time in the kernel per run, which
also serializes the two threads).  Instead, the static memory planner
(:func:`heli.runtime._memory.plan_memory`) places every intermediate tensor
the steps write, and every scratch buffer a step needs for itself, in one
arena allocated once; tensors whose lives do not overlap share bytes.

Two things keep this safe:

* **Views.** Host steps (Reshape, Transpose, Slice...) may return views of
  their inputs, so a buffer lives as long as any value that may alias it:
  values joined through a host step form one class, and each planned
  tensor lives to the last read of any member of its class.
* **What leaves.** A tensor of a class that holds a graph output is never
  placed in the arena (the caller keeps the outputs; the next run would
  overwrite them); it gets its own ``np.empty`` as before.

The executable serializes its runs (a lock), since every run writes the same
arena.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from heli.ir._graph import Graph, Node
from heli.ir._types import DType, TensorType
from heli.runtime._memory import DEFAULT_ALIGNMENT, Lifetime, plan_memory

F32 = np.dtype(np.float32)


@dataclass
class Arena:
    """The planned buffers of one executable; :meth:`allocate` makes them."""

    #: Values whose buffers steps may take from the arena (not graph outputs
    #: or their aliases): (defining step, last use, shape), by name.
    values: dict[str, tuple[int, int, tuple[int, ...]]]
    #: Scratch buffers steps asked for (see :meth:`scratch_for`): (step, shape), by key.
    scratch: dict[str, tuple[int, tuple[int, ...]]] = field(default_factory=dict)
    views: dict[str, np.ndarray] = field(default_factory=dict)
    memory: np.ndarray | None = None

    def output(self, name: str, shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
        """What a step calls for its result ``name``: the arena's view once
        allocated, else (not planned) a new array."""
        views = self.views

        def new() -> np.ndarray:
            view = views.get(name)
            return view if view is not None else np.empty(shape, F32)
        return new

    def scratch_for(self, step: int, shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
        """A buffer that step ``step`` uses only while it runs."""
        key = f"#scratch{len(self.scratch)}"
        self.scratch[key] = (step, tuple(shape))
        return self.output(key, tuple(shape))

    def allocate(self) -> None:
        """Plan every buffer and make its view of one new arena."""
        lifetimes = [Lifetime(name, 4 * math.prod(shape), first, last)
                     for name, (first, last, shape) in self.values.items()]
        lifetimes += [Lifetime(key, 4 * math.prod(shape), step, step)
                      for key, (step, shape) in self.scratch.items()]
        if not lifetimes:
            return
        shapes = {name: shape for name, (_, _, shape) in self.values.items()}
        shapes.update({key: shape for key, (_, shape) in self.scratch.items()})
        plan = plan_memory(lifetimes, DEFAULT_ALIGNMENT)
        memory = np.empty(plan.peak // 4 + DEFAULT_ALIGNMENT, F32)
        skip = (-memory.ctypes.data % DEFAULT_ALIGNMENT) // 4  # align the base too
        self.memory = memory
        for name, offset in plan.offsets.items():
            start = skip + offset // 4
            self.views[name] = memory[start:start + math.prod(shapes[name])].reshape(
                shapes[name])


def arena_for(graph: Graph, host: Callable[[Node], bool]) -> Arena:
    """The values of ``graph`` that may live in an arena, with their lives
    stretched over their aliases (``host(node)``: the node's step may
    return views of its inputs)."""
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        root = name
        while parent.get(root, root) != root:
            root = parent[root]
        while name != root:  # path compression
            parent[name], name = root, parent.get(name, name)
        return root

    last_use: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        for v in node.inputs:
            if v is not None:
                last_use[v.name] = index
        if host(node):
            names = [v.name for v in (*node.inputs, *node.outputs) if v is not None]
            for other in names[1:]:
                a, b = find(names[0]), find(other)
                if a != b:
                    parent[b] = a
    class_last: dict[str, int] = {}
    for name, index in last_use.items():
        root = find(name)
        class_last[root] = max(class_last.get(root, index), index)
    escaping = {find(v.name) for v in graph.outputs}
    values: dict[str, tuple[int, int, tuple[int, ...]]] = {}
    for index, node in enumerate(graph.nodes):
        if host(node):
            continue
        for v in node.outputs:
            if v is None or not _planned_type(v.type) or v.name in graph.constants:
                continue
            root = find(v.name)
            if root in escaping:
                continue
            last = max(index, class_last.get(root, index))
            values[v.name] = (index, last, tuple(v.type.shape))
    return Arena(values)


def _planned_type(t: object) -> bool:
    return isinstance(t, TensorType) and t.dtype == DType.FLOAT32 and t.is_static
