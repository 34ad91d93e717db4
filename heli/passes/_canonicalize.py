"""Canonicalization: rewrite common patterns into one preferred form.

A table maps an op type to a rewrite function.  Each function sees the node
(with its new operands) and returns the values that replace the node's
outputs, or ``None`` to keep it.  Rewrites:

* ``Identity`` and inference-mode ``Dropout`` disappear;
* ``BatchNormalization`` after a ``Conv`` (or ``ConvTranspose``) with constant
  weights folds into the convolution's weights and bias;
* ``MatMul`` of a 2-D input by a constant matrix followed by ``Add`` of a
  constant bias becomes one ``Gemm``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from heli.ir._builder import GraphBuilder, rebuild
from heli.ir._graph import Graph, Node, Value
from heli.ir._types import TensorType
from heli.passes._pass import Pass


@dataclass
class _Site:
    """What a rewrite may look at: the builder, the node, its new operands,
    and the original graph's producers and use counts."""

    builder: GraphBuilder
    node: Node
    inputs: list[Value | None]
    producers: dict[str, Node]
    use_count: dict[str, int]

    def const(self, index: int) -> np.ndarray | None:
        if index >= len(self.inputs):
            return None
        return self.builder.constant_value(self.inputs[index])

    def sole_producer(self, index: int, op_type: str) -> Node | None:
        """The node making operand ``index`` if it is ``op_type`` and has no other use."""
        value = self.node.inputs[index] if index < len(self.node.inputs) else None
        if value is None:
            return None
        producer = self.producers.get(value.name)
        if producer is None or producer.op.name != op_type or producer.op.domain:
            return None
        if self.use_count.get(value.name, 0) != 1:
            return None
        return producer


Rewrite = Callable[[_Site], "tuple[Value | None, ...] | None"]


def _drop_identity(site: _Site):
    return (site.inputs[0],)


def _drop_dropout(site: _Site):
    training = site.const(2)
    if len(site.inputs) > 2 and site.inputs[2] is not None and (
        training is None or bool(training)
    ):
        return None
    if len(site.node.outputs) > 1 and site.node.outputs[1] is not None:
        return None  # the mask is used: keep the node
    return (site.inputs[0],)


def _fold_batchnorm(site: _Site):
    """y = scale * (conv(x) - mean) / sqrt(var + eps) + B, folded into conv."""
    if len(site.node.outputs) > 1 and any(o is not None for o in site.node.outputs[1:]):
        return None
    if site.node.attr("training_mode"):
        return None
    params = [site.const(i) for i in range(1, 5)]
    if any(p is None for p in params):
        return None
    conv = site.sole_producer(0, "Conv") or site.sole_producer(0, "ConvTranspose")
    if conv is None:
        return None
    b = site.builder
    weight = b.constant_value(b.current(conv.inputs[1]))
    if weight is None or weight.dtype != np.float32:
        return None
    scale, bias, mean, var = (p.astype(np.float64) for p in params)
    factor = scale / np.sqrt(var + site.node.attr("epsilon"))
    out_channels = len(factor)
    group = conv.attr("group") or 1
    if conv.op.name == "Conv":
        if weight.shape[0] != out_channels:
            return None
        new_weight = weight * factor.reshape(-1, *([1] * (weight.ndim - 1)))
    else:  # ConvTranspose weights are [C_in, C_out / group, k...]
        if weight.shape[1] * group != out_channels:
            return None
        per_group = factor.reshape(group, 1, -1, *([1] * (weight.ndim - 2)))
        grouped = weight.reshape(group, -1, weight.shape[1], *weight.shape[2:])
        new_weight = (grouped * per_group).reshape(weight.shape)
    old_bias = b.constant_value(b.current(conv.inputs[2])) if (
        len(conv.inputs) > 2 and conv.inputs[2] is not None) else np.zeros(out_channels)
    if old_bias is None:
        return None
    new_bias = (old_bias.astype(np.float64) - mean) * factor + bias
    x = b.current(conv.inputs[0])
    w = b.add_constant(new_weight.astype(np.float32), b.fresh_name(f"{conv.name or 'conv'}_w"))
    c = b.add_constant(new_bias.astype(np.float32), b.fresh_name(f"{conv.name or 'conv'}_b"))
    return b.add_node(conv.op, [x, w, c], conv.attrs, name=conv.name or site.node.name)


def _matmul_add_to_gemm(site: _Site):
    for data_index in (0, 1):
        matmul = site.sole_producer(data_index, "MatMul")
        bias = site.const(1 - data_index)
        if matmul is not None and bias is not None:
            break
    else:
        return None
    b = site.builder
    a_value, w_value = (b.current(v) for v in matmul.inputs)
    weight = b.constant_value(w_value)
    a_type = a_value.type if a_value is not None else None
    if weight is None or weight.ndim != 2 or not isinstance(a_type, TensorType):
        return None
    if a_type.rank != 2 or a_type.dtype.np != weight.dtype or bias.dtype != weight.dtype:
        return None
    n = weight.shape[1]
    if bias.ndim > 2 or (bias.ndim >= 1 and bias.shape[-1] not in (1, n)):
        return None
    if bias.ndim == 2 and bias.shape[0] != 1 and bias.shape[0] != a_type.shape[0]:
        return None
    return b.add_node("Gemm", [a_value, w_value, site.inputs[1 - data_index]],
                      name=matmul.name or site.node.name)


REWRITES: dict[str, Rewrite] = {
    "Identity": _drop_identity,
    "Dropout": _drop_dropout,
    "BatchNormalization": _fold_batchnorm,
    "Add": _matmul_add_to_gemm,
}


@dataclass
class Canonicalize(Pass):
    name = "canonicalize"
    description = "drop Identity/Dropout, fold BatchNorm into Conv, MatMul+Add into Gemm"

    def apply(self, graph: Graph) -> Graph:
        producers = graph.producers()
        use_count = graph.use_counts()

        def visit(builder: GraphBuilder, node: Node, inputs: list[Value | None]):
            rewrite = REWRITES.get(node.op.name) if not node.op.domain else None
            if rewrite is None:
                return None
            return rewrite(_Site(builder, node, inputs, producers, use_count))

        return rebuild(graph, visit)
