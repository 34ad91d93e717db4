import numpy as np
import pytest
from onnx import helper, numpy_helper

from heli._errors import VerificationError
from heli.ir import Graph
from heli.passes import (
    CommonSubexpressionElimination,
    ConstantFolding,
    DeadCodeElimination,
    Pass,
    PassManager,
    ShapeInference,
    default_pipeline,
)
from tests.frontend.test_onnx import make_model, tensor_info
from tests.passes.helpers import bind, import_onnx, ops_of, rand, run_graph


def dynamic_reshape_model():
    """y = reshape(x, [shape(x)[0], -1]) * (2 + 3): folds once shapes are bound."""
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(3.0, np.float32), "three")]
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Concat", ["n", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Add", ["two", "three"], ["five"]),
        helper.make_node("Mul", ["r", "five"], ["y"]),
    ]
    return make_model(nodes, [tensor_info("x", ["N", 3, 4])], [tensor_info("y", None)], inits)


def test_shape_inference_binds_symbols():
    graph = import_onnx(dynamic_reshape_model())
    assert graph.inputs[0].type.shape == ("N", 3, 4)
    bound = ShapeInference(bind(graph, x=(2, 3, 4))).apply(graph)
    assert bound.inputs[0].type.shape == (2, 3, 4)


def test_constant_folding_folds_shape_arithmetic_after_binding():
    graph = import_onnx(dynamic_reshape_model())
    manager = PassManager([ShapeInference(bind(graph, x=(2, 3, 4))), ConstantFolding(),
                           DeadCodeElimination()])
    folded = manager.run(graph)
    assert ops_of(graph) == ["Shape", "Gather", "Concat", "Reshape", "Add", "Mul"]
    assert ops_of(folded) == ["Reshape", "Mul"]
    assert folded.outputs[0].type.shape == (2, 12)  # Reshape now has a constant shape
    x = rand(2, 3, 4)
    np.testing.assert_allclose(run_graph(folded, {"x": x})["y"], x.reshape(2, 12) * 5)


def test_constant_folding_keeps_dynamic_shapes_dynamic():
    graph = import_onnx(dynamic_reshape_model())
    folded = PassManager([ConstantFolding(), DeadCodeElimination()]).run(graph)
    assert "Shape" in ops_of(folded) and "Add" not in ops_of(folded)


def test_cse_merges_identical_nodes_and_constants():
    inits = [numpy_helper.from_array(np.float32(2.0).reshape(()), "c1"),
             numpy_helper.from_array(np.float32(2.0).reshape(()), "c2")]
    nodes = [
        helper.make_node("Mul", ["x", "c1"], ["a"]),
        helper.make_node("Mul", ["x", "c2"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    model = make_model(nodes, [tensor_info("x", [3])], [tensor_info("y", [3])], inits)
    graph = PassManager([CommonSubexpressionElimination(), DeadCodeElimination()]).run(
        import_onnx(model))
    assert ops_of(graph) == ["Mul", "Add"] and len(graph.constants) == 1
    x = rand(3)
    np.testing.assert_allclose(run_graph(graph, {"x": x})["y"], 4 * x, rtol=1e-6)


def test_dce_removes_unused_nodes():
    nodes = [helper.make_node("Relu", ["x"], ["unused"]), helper.make_node("Neg", ["x"], ["y"])]
    model = make_model(nodes, [tensor_info("x", [3])], [tensor_info("y", [3])])
    graph = DeadCodeElimination().apply(import_onnx(model))
    assert ops_of(graph) == ["Neg"]


def test_pass_manager_times_each_pass_and_verifies():
    graph = import_onnx(dynamic_reshape_model())
    manager = PassManager(default_pipeline(bind(graph, x=(2, 3, 4))), verify=True)
    manager.run(graph)
    assert [r.name for r in manager.records] == [p.name for p in manager.passes]
    assert all(r.seconds >= 0 for r in manager.records)

    class Broken(Pass):
        name = "broken"

        def apply(self, graph: Graph) -> Graph:
            return graph.replace(nodes=tuple(reversed(graph.nodes)))

    with pytest.raises(VerificationError, match="After pass 'broken'"):
        PassManager([Broken()], verify=True).run(graph)
