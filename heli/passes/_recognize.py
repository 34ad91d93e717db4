"""Recognition: rebuild the single ops that exporters spell out as chains.

PyTorch's ONNX exporter (before opset 17 / 20) writes LayerNorm and GELU as
chains of small ops.  Run as a chain, each op is its own pass over memory (a
reduction cannot fuse into an elementwise group), so this pass puts the one
op back, which every target runs in one step.  A table maps the op type of a
chain's *last* node to a matcher; the matcher walks back through producers
and returns the replacement values, or ``None`` to keep the node:

* **LayerNormalization**: ``d = x - ReduceMean(x)``,
  ``d / Sqrt(ReduceMean(Pow(d, 2)) + eps) * gamma + beta`` (``d * d`` for the
  square too), both means over the same trailing axes with ``keepdims``,
  ``eps``, ``gamma`` and ``beta`` constants;
* **Gelu**: ``x * (Erf(x / sqrt(2)) + 1) * 0.5`` in any operand order, the
  0.5 applied first or last, ``x * (1 / sqrt(2))`` for the division.

Every inner value must have no reader outside its chain (and not be a graph
output), so the chain's nodes become dead; the pass drops them itself.  Only
float32 chains are rewritten: the single ops compute the same function, and
the reference ``LayerNormalization`` / ``Gelu`` accumulate in float64, so
results move by float32 rounding only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from heli.ir._builder import GraphBuilder, rebuild
from heli.ir._graph import Graph, Node, Value
from heli.ir._types import DType, TensorType
from heli.passes._dce import DeadCodeElimination
from heli.passes._pass import Pass


@dataclass
class _Chain:
    """The original graph, as a matcher sees it: producers, reader counts, constants."""

    builder: GraphBuilder
    producers: dict[str, Node]
    use_count: dict[str, int]
    constants: dict[str, np.ndarray]

    def const(self, value: Value | None) -> np.ndarray | None:
        return None if value is None else self.constants.get(value.name)

    def scalar(self, value: Value | None) -> float | None:
        array = self.const(value)
        if array is None or array.size != 1 or array.dtype.kind != "f":
            return None
        return float(np.asarray(array, np.float64).reshape(()))

    def inner(self, value: Value | None, op_type: str, uses: int = 1) -> Node | None:
        """The ``op_type`` node making ``value`` if ``value`` has exactly ``uses`` readers."""
        if value is None or self.use_count.get(value.name, 0) != uses:
            return None
        node = self.producers.get(value.name)
        if node is None or node.op.domain or node.op.name != op_type:
            return None
        if len(node.outputs) != 1 or not _f32(node.outputs[0]):
            return None
        return node

    def split(self, node: Node, op_type: str, uses: int = 1) -> tuple[Node, Value] | None:
        """For a binary ``node``: (the ``op_type`` producer of one operand, the other operand)."""
        if len(node.inputs) != 2:
            return None
        for k in (0, 1):
            found = self.inner(node.inputs[k], op_type, uses)
            if found is not None:
                return found, node.inputs[1 - k]
        return None

    def with_scalar(self, node: Node, want: float) -> Value | None:
        """For a binary ``node``: the operand beside a constant ``want`` (float32-close)."""
        if len(node.inputs) != 2:
            return None
        for k in (0, 1):
            c = self.scalar(node.inputs[k])
            if c is not None and math.isclose(c, want, rel_tol=1e-6):
                return node.inputs[1 - k]
        return None


def _f32(value: Value | None) -> bool:
    t = value.type if value is not None else None
    return isinstance(t, TensorType) and t.dtype == DType.FLOAT32


def _same(a: Value | None, b: Value | None) -> bool:
    return a is not None and b is not None and a.name == b.name


# ------------------------------------------------------------------ LayerNorm

def _trailing_axes(chain: _Chain, mean: Node, rank: int) -> int | None:
    """The first axis of ``mean``'s reduction if it is the trailing axes, kept."""
    if mean.attr("keepdims") != 1 or len(mean.inputs) < 2:
        return None
    axes = chain.const(mean.inputs[1])
    if axes is None or axes.size == 0 or axes.dtype.kind not in "iu":
        return None
    normalized = sorted({int(a) + rank if a < 0 else int(a) for a in axes.reshape(-1)})
    if normalized != list(range(rank - len(normalized), rank)) or normalized[0] < 0:
        return None
    return normalized[0]


def _square_of(chain: _Chain, value: Value | None) -> Value | None:
    """``d`` if ``value`` is ``Pow(d, 2)`` or ``d * d`` with no other reader."""
    node = chain.inner(value, "Pow")
    if node is not None and chain.scalar(node.inputs[1]) == 2.0:
        return node.inputs[0]
    node = chain.inner(value, "Mul")
    if node is not None and _same(node.inputs[0], node.inputs[1]):
        return node.inputs[0]
    return None


def _param(chain: _Chain, value: Value, normalized: tuple[int, ...]) -> np.ndarray | None:
    """A constant scale/bias as an array of the normalized shape, if it broadcasts as one."""
    array = chain.const(value)
    if array is None or array.dtype != np.float32:
        return None
    shape = tuple(array.shape)
    while shape and shape[0] == 1 and len(shape) > len(normalized):
        shape = shape[1:]
    if len(shape) > len(normalized) or any(
            s not in (1, n) for s, n in zip(reversed(shape), reversed(normalized), strict=False)):
        return None
    return np.ascontiguousarray(np.broadcast_to(array.reshape(shape), normalized))


def _layer_norm(chain: _Chain, root: Node) -> tuple[Value, ...] | None:
    """``root`` = Add(Mul(Div(d, Sqrt(Add(ReduceMean(d²), eps))), gamma), beta)."""
    found = chain.split(root, "Mul")
    if found is None:
        return None
    scaled, beta = found
    found = chain.split(scaled, "Div")
    if found is None:
        return None
    div, gamma = found
    d, std = div.inputs
    sqrt = chain.inner(std, "Sqrt")
    plus_eps = sqrt and chain.inner(sqrt.inputs[0], "Add")
    found = plus_eps and chain.split(plus_eps, "ReduceMean")
    if not found:
        return None
    var_mean, eps_value = found
    epsilon = chain.scalar(eps_value)
    if epsilon is None or epsilon < 0 or not _same(_square_of(chain, var_mean.inputs[0]), d):
        return None
    sub = chain.inner(d, "Sub", uses=2)  # read by the square and by the Div
    mean = sub and chain.inner(sub.inputs[1], "ReduceMean")
    if not mean or not _same(mean.inputs[0], sub.inputs[0]):
        return None
    x = sub.inputs[0]
    if not _f32(x) or x.tensor_type.shape is None:
        return None
    rank = len(x.tensor_type.shape)
    axis = _trailing_axes(chain, mean, rank)
    if axis is None or axis != _trailing_axes(chain, var_mean, rank):
        return None
    normalized = tuple(x.tensor_type.shape[axis:])
    if not all(isinstance(n, int) for n in normalized):
        return None
    scale, bias = _param(chain, gamma, normalized), _param(chain, beta, normalized)
    if scale is None or bias is None:
        return None
    b = chain.builder
    label = root.name or "layernorm"
    inputs = [b.current(x), b.add_constant(scale, b.fresh_name(f"{label}_scale")),
              b.add_constant(bias, b.fresh_name(f"{label}_bias"))]
    return b.add_node("LayerNormalization", inputs,
                      {"axis": axis, "epsilon": float(np.float32(epsilon))}, name=root.name)


# ----------------------------------------------------------------------- Gelu

def _erf_term(chain: _Chain, value: Value | None) -> Value | None:
    """``x`` if ``value`` is ``Erf(x / sqrt(2)) + 1`` (``x * (1/sqrt(2))`` too)."""
    add = chain.inner(value, "Add")
    found = add and chain.split(add, "Erf")
    if not found or chain.scalar(found[1]) != 1.0:
        return None
    scaled = found[0].inputs[0]
    div = chain.inner(scaled, "Div")
    if div is not None:
        c = chain.scalar(div.inputs[1])
        return div.inputs[0] if c is not None and math.isclose(c, math.sqrt(2), rel_tol=1e-6) \
            else None
    mul = chain.inner(scaled, "Mul")
    return mul and chain.with_scalar(mul, math.sqrt(0.5))


def _gelu(chain: _Chain, root: Node) -> tuple[Value, ...] | None:
    """``root`` = Mul(Mul(x, erf_term), 0.5) or Mul(Mul(x, 0.5), erf_term)."""
    if len(root.inputs) != 2 or not _f32(root.outputs[0]):
        return None
    x = None
    rest = chain.with_scalar(root, 0.5)  # 0.5 applied last
    product = chain.inner(rest, "Mul")
    if product is not None:
        for k in (0, 1):
            y = _erf_term(chain, product.inputs[k])
            if _same(y, product.inputs[1 - k]):
                x = y
    for k in (0, 1):  # 0.5 applied to x first
        half = chain.inner(root.inputs[k], "Mul")
        y = half and chain.with_scalar(half, 0.5)
        if x is None and y is not None and _same(_erf_term(chain, root.inputs[1 - k]), y):
            x = y
    if x is None or not _f32(x):
        return None
    return chain.builder.add_node("Gelu", [chain.builder.current(x)], name=root.name)


Matcher = Callable[[_Chain, Node], "tuple[Value | None, ...] | None"]

#: The op type of a chain's last node -> its matcher.
PATTERNS: dict[str, tuple[Matcher, ...]] = {
    "Add": (_layer_norm,),
    "Mul": (_gelu,),
}


@dataclass
class Recognize(Pass):
    name = "recognize"
    description = "rebuild LayerNormalization and Gelu from their exported op chains"

    def apply(self, graph: Graph) -> Graph:
        producers = graph.producers()
        use_count = graph.use_counts()
        if not any(n.op.name in ("Erf", "ReduceMean") and not n.op.domain for n in graph.nodes):
            return graph  # nothing to recognize: skip the rebuild
        changed = False

        def visit(builder: GraphBuilder, node: Node, inputs: list[Value | None]):
            nonlocal changed
            if node.op.domain or len(node.outputs) != 1:
                return None
            for matcher in PATTERNS.get(node.op.name, ()):
                chain = _Chain(builder, producers, use_count, graph.constants)
                replacement = matcher(chain, node)
                if replacement is not None:
                    changed = True
                    return replacement
            return None

        rebuilt = rebuild(graph, visit)
        return DeadCodeElimination().apply(rebuilt) if changed else graph
