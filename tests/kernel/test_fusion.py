"""The Fusion pass: groups follow the rules it is given, the fused graph
verifies, and its reference semantics (the body run by the ref executor) give
the unfused graph's results."""

from __future__ import annotations

import numpy as np

from heli.ir._builder import GraphBuilder
from heli.ir._types import DType, TensorType
from heli.ir._verify import verify
from heli.passes import Fusion, FusionRules
from heli.targets.ref import GraphRunner

EW = frozenset({"Add", "Mul", "Relu", "Sigmoid", "Div", "Erf", "Clip"})
RULES = FusionRules(anchors=frozenset({"Conv", "MatMul"}), epilogue=EW, elementwise=EW)


def conv_block():
    """conv -> +bias -> relu -> + residual(x) ; then sigmoid * y (a swish-like diamond)."""
    rng = np.random.default_rng(0)
    b = GraphBuilder("block")
    x = b.add_input("x", TensorType(DType.FLOAT32, (1, 4, 6, 6)))
    w = b.add_constant(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w")
    bias = b.add_constant(rng.standard_normal((4, 1, 1)).astype(np.float32), "bias")
    (y,) = b.add_node("Conv", [x, w], {"pads": (1, 1, 1, 1)})
    (y,) = b.add_node("Add", [y, bias])
    (y,) = b.add_node("Relu", [y])
    (y,) = b.add_node("Add", [y, x])
    (s,) = b.add_node("Sigmoid", [y])
    (z,) = b.add_node("Mul", [y, s])
    return b.build([z], ["z"])


def run(graph, feeds):
    return GraphRunner(graph, check_types=True).run(feeds)


def test_anchor_and_elementwise_groups():
    graph = conv_block()
    fused = Fusion(RULES).apply(graph)
    verify(fused)
    kinds = [(n.op.qualname, n.attr("kind") if n.op.domain else None) for n in fused.nodes]
    # The residual's result feeds both Sigmoid and Mul: the group takes both
    # (the diamond closes inside it), so the whole block is one kernel.
    assert kinds == [("heli:FusedGroup", "anchor")]
    anchor = fused.nodes[0].attr("body")
    assert [n.op.name for n in anchor.nodes] == ["Conv", "Add", "Relu", "Add", "Sigmoid", "Mul"]
    assert set(anchor.constants) == {"w", "bias"}  # the group's weights travel with it
    assert not fused.constants  # nothing outside reads them any more
    x = np.random.default_rng(1).standard_normal((1, 4, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(run(fused, {"x": x})[0], run(graph, {"x": x})[0])


def test_rules_decide_what_fuses():
    graph = conv_block()
    assert Fusion(FusionRules()).apply(graph) is graph  # a target that fuses nothing
    no_relu = FusionRules(anchors=RULES.anchors, epilogue=frozenset({"Add"}),
                          elementwise=frozenset())
    fused = Fusion(no_relu).apply(graph)
    ops = [n.op.qualname for n in fused.nodes]
    assert ops == ["heli:FusedGroup", "Relu", "Add", "Sigmoid", "Mul"]
    no_sigmoid = FusionRules(anchors=RULES.anchors, epilogue=frozenset({"Add", "Relu"}),
                             elementwise=frozenset({"Sigmoid", "Mul"}))
    fused = Fusion(no_sigmoid).apply(graph)
    assert [(n.op.qualname, n.attr("kind")) for n in fused.nodes] == [
        ("heli:FusedGroup", "anchor"), ("heli:FusedGroup", "elementwise")]
    veto = FusionRules(anchors=RULES.anchors, epilogue=EW, elementwise=EW,
                       accepts=lambda node: node.op.name != "Relu")
    ops = [n.op.qualname for n in Fusion(veto).apply(graph).nodes]
    assert ops[:2] == ["heli:FusedGroup", "Relu"]


def test_a_value_used_outside_stops_the_group():
    b = GraphBuilder("g")
    x = b.add_input("x", TensorType(DType.FLOAT32, (8,)))
    (a,) = b.add_node("Relu", [x])
    (c,) = b.add_node("Sigmoid", [a])
    (d,) = b.add_node("Mul", [c, c])
    graph = b.build([a, d], ["a", "d"])  # `a` is a graph output: it must stay visible
    fused = Fusion(RULES).apply(graph)
    verify(fused)
    assert [n.op.qualname for n in fused.nodes] == ["Relu", "heli:FusedGroup"]
    feeds = {"x": np.linspace(-2, 2, 8, dtype=np.float32)}
    for got, want in zip(run(fused, feeds), run(graph, feeds), strict=True):
        np.testing.assert_array_equal(got, want)


def test_broadcasting_chain_and_shape_guard():
    b = GraphBuilder("g")
    x = b.add_input("x", TensorType(DType.FLOAT32, (3, 1)))
    y = b.add_input("y", TensorType(DType.FLOAT32, (3, 5)))
    (a,) = b.add_node("Relu", [x])  # (3, 1) grows to (3, 5): fine
    (c,) = b.add_node("Add", [a, y])
    (d,) = b.add_node("Sigmoid", [c])
    graph = b.build([d], ["d"])
    fused = Fusion(RULES).apply(graph)
    (node,) = fused.nodes
    assert node.attr("kind") == "elementwise" and len(node.attr("body").nodes) == 3
    assert node.outputs[0].type == TensorType(DType.FLOAT32, (3, 5))
