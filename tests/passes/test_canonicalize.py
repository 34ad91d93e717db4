import numpy as np
from onnx import helper, numpy_helper

from heli.passes import Canonicalize, DeadCodeElimination, PassManager
from tests.conftest import run_onnxruntime
from tests.frontend.test_onnx import make_model, tensor_info
from tests.passes.helpers import import_onnx, ops_of, rand, run_graph


def conv_bn_model():
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
        numpy_helper.from_array(rng.uniform(0.5, 2, 8).astype(np.float32), "scale"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "shift"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "mean"),
        numpy_helper.from_array(rng.uniform(0.5, 2, 8).astype(np.float32), "var"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["y"],
                         epsilon=1e-3),
    ]
    return make_model(nodes, [tensor_info("x", [1, 3, 8, 8])], [tensor_info("y", None)], inits)


def test_batchnorm_folds_into_conv():
    model = conv_bn_model()
    graph = import_onnx(model)
    folded = PassManager([Canonicalize(), DeadCodeElimination()]).run(graph)
    assert ops_of(graph) == ["Conv", "BatchNormalization"]
    assert ops_of(folded) == ["Conv"]
    x = rand(1, 3, 8, 8)
    want = run_onnxruntime(model, {"x": x})["y"]
    np.testing.assert_allclose(run_graph(folded, {"x": x})["y"], want, rtol=1e-4, atol=1e-5)


def test_identity_and_dropout_disappear():
    nodes = [
        helper.make_node("Identity", ["x"], ["a"]),
        helper.make_node("Dropout", ["a"], ["b"]),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    model = make_model(nodes, [tensor_info("x", [4])], [tensor_info("y", [4])])
    graph = PassManager([Canonicalize(), DeadCodeElimination()]).run(import_onnx(model))
    assert ops_of(graph) == ["Relu"]
    assert graph.outputs[0].name == "y"


def test_identity_as_graph_output_keeps_output_name():
    model = make_model([helper.make_node("Identity", ["x"], ["y"])],
                       [tensor_info("x", [2])], [tensor_info("y", [2])])
    graph = PassManager([Canonicalize(), DeadCodeElimination()]).run(import_onnx(model))
    x = np.array([1.0, 2.0], np.float32)
    assert run_graph(graph, {"x": x})["y"].tolist() == [1.0, 2.0]


def test_matmul_add_becomes_gemm():
    w = numpy_helper.from_array(rand(4, 5), "w")
    bias = numpy_helper.from_array(rand(5, seed=1), "bias")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Add", ["m", "bias"], ["y"])]
    model = make_model(nodes, [tensor_info("x", [3, 4])], [tensor_info("y", [3, 5])], [w, bias])
    graph = PassManager([Canonicalize(), DeadCodeElimination()]).run(import_onnx(model))
    assert ops_of(graph) == ["Gemm"]
    x = rand(3, 4, seed=2)
    want = x.astype(np.float64) @ numpy_helper.to_array(w) + numpy_helper.to_array(bias)
    np.testing.assert_allclose(run_graph(graph, {"x": x})["y"], want, rtol=1e-5, atol=1e-6)


def test_matmul_add_with_3d_input_is_left_alone():
    w = numpy_helper.from_array(rand(4, 5), "w")
    bias = numpy_helper.from_array(rand(5, seed=1), "bias")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Add", ["m", "bias"], ["y"])]
    model = make_model(nodes, [tensor_info("x", [2, 3, 4])], [tensor_info("y", None)], [w, bias])
    graph = PassManager([Canonicalize(), DeadCodeElimination()]).run(import_onnx(model))
    assert ops_of(graph) == ["MatMul", "Add"]
