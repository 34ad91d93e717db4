"""Constant folding: evaluate nodes whose inputs are all known.

A node folds when every operand is a constant, or when its result depends
only on shapes that are static (``Shape``, ``Size``).  Folding uses the ops'
reference semantics, the same code the ``ref`` target runs, so it cannot
disagree with execution.  Each fold re-infers downstream types, so e.g. a
``Reshape`` whose shape operand becomes constant gets a static shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heli.ir._builder import GraphBuilder, rebuild
from heli.ir._graph import Graph, Node, Value, subgraphs_of
from heli.ir._ops import ExecContext
from heli.ir._types import TensorType
from heli.passes._pass import Pass


def _static_shape(value: Value | None) -> tuple[int, ...] | None:
    t = value.type if value is not None else None
    return tuple(t.shape) if isinstance(t, TensorType) and t.is_static else None  # type: ignore[arg-type]


def _fold_shape(node: Node, inputs: list[Value | None]) -> list[np.ndarray] | None:
    shape = _static_shape(inputs[0])
    if shape is None:
        return None
    start, end = node.attr("start") or 0, node.attr("end")
    rank = len(shape)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = rank if end is None else min(max(end + rank if end < 0 else end, 0), rank)
    return [np.array(shape[start:end], dtype=np.int64)]


def _fold_size(node: Node, inputs: list[Value | None]) -> list[np.ndarray] | None:
    shape = _static_shape(inputs[0])
    return None if shape is None else [np.array(int(np.prod(shape)), dtype=np.int64)]


def _no_subgraphs(*args, **kwargs):
    raise RuntimeError("constant folding does not run subgraphs")


# Ops whose result follows from static input shapes alone.
SHAPE_FOLDERS = {"Shape": _fold_shape, "Size": _fold_size}


@dataclass
class ConstantFolding(Pass):
    """Fold constant subexpressions; ``max_bytes`` caps the size of a folded
    result so that e.g. a huge ``ConstantOfShape`` stays a node."""

    name = "constant-folding"
    description = "evaluate nodes whose inputs are constants or static shapes"
    max_bytes: int = 64 << 20

    def apply(self, graph: Graph) -> Graph:
        def visit(builder: GraphBuilder, node: Node, inputs: list[Value | None]):
            arrays = self._fold(builder, node, inputs)
            if arrays is None:
                return None
            return tuple(
                builder.add_constant(array, out.name) if out is not None else None
                for out, array in zip(node.outputs, arrays, strict=True)
            )

        return rebuild(graph, visit)

    @staticmethod
    def _known_bytes(node: Node) -> int:
        total = 0
        for out in node.outputs:
            t = out.type if out is not None else None
            if isinstance(t, TensorType) and t.is_static:
                total += (t.numel() or 0) * t.dtype.itemsize
        return total

    def _fold(self, builder: GraphBuilder, node: Node, inputs: list[Value | None]):
        if not node.op.deterministic or any(subgraphs_of(node)):
            return None
        if node.op.name in SHAPE_FOLDERS and not node.op.domain:
            return SHAPE_FOLDERS[node.op.name](node, inputs)
        values = [builder.constant_value(v) for v in inputs]
        if any(v is None and value is not None for v, value in zip(values, inputs, strict=True)):
            return None
        if not all(isinstance(o.type, TensorType) for o in node.outputs if o is not None):
            return None
        if self._known_bytes(node) > self.max_bytes:
            return None  # e.g. a ConstantOfShape filling huge weights: not worth computing
        kwargs = node.op.resolve_attrs(node.attrs)
        if node.op.wants_ctx:
            kwargs["ctx"] = ExecContext(
                node_name=node.name, num_outputs=len(node.outputs),
                output_types=tuple(o.type if o is not None else None for o in node.outputs),
                run_graph=_no_subgraphs, outer={},
            )
        try:
            with np.errstate(all="ignore"):
                result = node.op.reference(*values, **kwargs)
        except Exception:
            return None  # leave it for run time, where the error names the node
        arrays = list(result) if isinstance(result, tuple | list) else [result]
        if len(arrays) < len(node.outputs) or not all(isinstance(a, np.ndarray | np.generic)
                                                      for a in arrays):
            return None
        arrays = [np.asarray(a) for a in arrays[: len(node.outputs)]]
        if sum(a.nbytes for a in arrays) > self.max_bytes:
            return None
        return arrays
