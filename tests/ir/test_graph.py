import dataclasses

import numpy as np
import pytest

from heli._errors import ModelLoadError, ShapeError, VerificationError
from heli.ir import DType, Graph, GraphBuilder, TensorType, Value, format_graph, verify
from heli.ir._graph import Node

F32 = DType.FLOAT32


def small_graph() -> Graph:
    b = GraphBuilder("g")
    x = b.add_input("x", TensorType(F32, ("N", 4)))
    w = b.add_constant(np.ones((4, 3), np.float32), "w")
    (y,) = b.add_node("MatMul", [x, w], output_names=["y"])
    (z,) = b.add_node("Relu", [y], output_names=["z"])
    return b.build([z])


def test_values_and_nodes_are_frozen():
    g = small_graph()
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.nodes[0].name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        g.constants["w"] = np.zeros(1)  # type: ignore[index]
    assert isinstance(g.nodes, tuple) and isinstance(g.nodes[0].inputs, tuple)


def test_replace_rejects_unknown_fields():
    v = Value("x", TensorType(F32, (1,)))
    assert v.replace(name="y").name == "y"
    with pytest.raises(TypeError, match=r"unknown field\(s\) \['nmae'\]"):
        v.replace(nmae="y")
    g = small_graph()
    with pytest.raises(TypeError, match="unknown field"):
        g.replace(node=())


def test_builder_infers_symbolic_shapes():
    g = small_graph()
    assert g.outputs[0].type == TensorType(F32, ("N", 3))


def test_builder_rejects_bad_arity_and_attrs():
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, (2,)))
    with pytest.raises(ShapeError, match="Relu node 'r' has 2 inputs; it takes exactly 1"):
        b.add_node("Relu", [x, x], name="r")
    with pytest.raises(ModelLoadError, match=r"unknown attribute\(s\) \['alpha'\]"):
        b.add_node("Relu", [x], {"alpha": 1.0}, name="r")


def test_build_renames_outputs_without_identity_when_possible():
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, (2,)))
    (y,) = b.add_node("Relu", [x])
    g = b.build([y], ["out"])
    assert [n.op.name for n in g.nodes] == ["Relu"] and g.outputs[0].name == "out"
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, (2,)))
    g = b.build([x], ["out"])  # an input returned under another name needs an Identity
    assert [n.op.name for n in g.nodes] == ["Identity"]


def test_verifier_catches_use_before_definition():
    g = small_graph()
    broken = g.replace(nodes=tuple(reversed(g.nodes)))
    with pytest.raises(VerificationError, match="reads 'y' before it is defined"):
        verify(broken)
    verify(g)


def test_verifier_catches_double_definition():
    g = small_graph()
    relu = g.nodes[1]
    dup = Node(relu.op, relu.inputs, relu.outputs)
    with pytest.raises(VerificationError, match="defined twice"):
        verify(g.replace(nodes=g.nodes + (dup,)))


def test_printer_is_readable():
    text = format_graph(small_graph())
    assert text.splitlines()[0] == "graph g(%x: float32[N, 4]) -> (%z) {"
    assert "  const %w: float32[4, 3]" in text
    assert "  %y = MatMul(%x, %w)  : float32[N, 3]" in text
    assert "  %z = Relu(%y)  : float32[N, 3]" in text
    assert text.splitlines()[-2:] == ["  return %z", "}"]
