"""Model statistics: op histogram, parameter count and FLOPs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from heli.ir._graph import Graph, Node
from heli.ir._types import TensorType


@dataclass(frozen=True)
class GraphStats:
    op_histogram: dict[str, int]
    parameters: int  # elements of all constants
    parameter_bytes: int
    flops: int | None  # None when some counted op has a dynamic shape


def _shape(value) -> tuple[int, ...] | None:
    t = value.type if value is not None else None
    if isinstance(t, TensorType) and t.is_static:
        return tuple(t.shape)  # type: ignore[arg-type]
    return None


def _numel(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _conv_flops(node: Node) -> int | None:
    out, w = _shape(node.outputs[0]), _shape(node.inputs[1])
    if out is None or w is None:
        return None
    # Each output element takes C_in/group * prod(kernel) multiply-adds.
    return 2 * _numel(out) * _numel(w[1:])


def _conv_transpose_flops(node: Node) -> int | None:
    x, w = _shape(node.inputs[0]), _shape(node.inputs[1])
    if x is None or w is None:
        return None
    # Each input element is scattered into C_out/group * prod(kernel) outputs.
    return 2 * _numel(x) * _numel(w[1:])


def _matmul_flops(node: Node) -> int | None:
    a, out = _shape(node.inputs[0]), _shape(node.outputs[0])
    if a is None or out is None or not a:
        return None
    return 2 * _numel(out) * a[-1]


def _gemm_flops(node: Node) -> int | None:
    a, out = _shape(node.inputs[0]), _shape(node.outputs[0])
    if a is None or out is None:
        return None
    k = a[0] if node.attr("transA") else a[1]
    return 2 * _numel(out) * k


def _elementwise_flops(node: Node) -> int | None:
    out = _shape(node.outputs[0]) if node.outputs and node.outputs[0] is not None else None
    return None if out is None else _numel(out)


FLOP_COUNTERS: dict[str, Callable[[Node], int | None]] = {
    "Conv": _conv_flops,
    "ConvTranspose": _conv_transpose_flops,
    "MatMul": _matmul_flops,
    "Gemm": _gemm_flops,
}
# Data movement costs no arithmetic.
ZERO_FLOP_OPS = {
    "Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "Squeeze", "Unsqueeze",
    "Flatten", "Shape", "Expand", "Identity", "Cast", "Pad", "Tile", "Constant", "Dropout",
}


def graph_stats(graph: Graph) -> GraphStats:
    histogram = Counter(node.op.qualname for node in graph.nodes)
    parameters = sum(int(a.size) for a in graph.constants.values())
    parameter_bytes = sum(int(a.nbytes) for a in graph.constants.values())
    flops: int | None = 0
    for node in graph.nodes:
        if node.op.name in ZERO_FLOP_OPS:
            continue
        counter = FLOP_COUNTERS.get(node.op.name, _elementwise_flops)
        count = counter(node)
        if count is None:
            flops = None
            break
        flops += count
    return GraphStats(dict(histogram.most_common()), parameters, parameter_bytes, flops)
