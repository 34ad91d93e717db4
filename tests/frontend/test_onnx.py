import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import heli
from heli._errors import ModelLoadError, UnsupportedError
from heli.frontend.onnx import import_onnx
from tests.conftest import run_onnxruntime


def make_model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def tensor_info(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_initializers_and_constant_nodes_become_constants():
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    nodes = [
        helper.make_node("Constant", [], ["c"], value_float=2.0),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
        helper.make_node("Mul", ["y", "c"], ["z"]),
    ]
    model = make_model(nodes, [tensor_info("x", ["batch", 2])], [tensor_info("z", None)], [w])
    graph = import_onnx(model)
    assert set(graph.constants) == {"w", "c"}
    assert [n.op.name for n in graph.nodes] == ["MatMul", "Mul"]
    assert graph.inputs[0].type.shape == ("batch", 2)
    assert graph.outputs[0].type.shape == ("batch", 3)
    x = np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)
    got = heli.compile(model).run({"x": x})["z"]
    np.testing.assert_allclose(got, run_onnxruntime(model, {"x": x})["z"], rtol=1e-6)


def test_inputs_with_initializers_are_constants():
    b = numpy_helper.from_array(np.ones(3, np.float32), "b")
    model = make_model([helper.make_node("Add", ["x", "b"], ["y"])],
                       [tensor_info("x", [3]), tensor_info("b", [3])], [tensor_info("y", [3])], [b])
    graph = import_onnx(model)
    assert [v.name for v in graph.inputs] == ["x"] and "b" in graph.constants


def test_external_data(tmp_path):
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((64, 64))
                                .astype(np.float32), "w")
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                       [tensor_info("x", [1, 64])], [tensor_info("y", [1, 64])], [w])
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    assert (tmp_path / "weights.bin").is_file()
    x = np.ones((1, 64), np.float32)
    got = heli.compile(str(path)).run({"x": x})["y"]
    np.testing.assert_allclose(got, x @ numpy_helper.to_array(w), rtol=1e-5)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelLoadError, match="external data"):
        import_onnx(str(path))


def test_all_unsupported_ops_are_listed_at_once():
    nodes = [
        helper.make_node("FooOp", ["x"], ["a"], name="foo_1", domain="acme"),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("BarOp", ["b"], ["c"], name="bar_1"),
    ]
    model = make_model(nodes, [tensor_info("x", [1])], [tensor_info("c", [1])])
    with pytest.raises(UnsupportedError) as info:
        import_onnx(model)
    message = str(info.value)
    assert "2 unsupported op(s)" in message
    assert "FooOp in domain 'acme' (node 'foo_1', opset 17)" in message
    assert "BarOp (node 'bar_1', opset 17)" in message


def test_old_opset_forms_are_upgraded():
    # Squeeze-11 takes axes as an attribute; Softmax-11 flattens at `axis`.
    nodes = [
        helper.make_node("Squeeze", ["x"], ["s"], axes=[0]),
        helper.make_node("Softmax", ["s"], ["y"], axis=1),
    ]
    model = make_model(nodes, [tensor_info("x", [1, 2, 3, 4])], [tensor_info("y", None)],
                       opset=11)
    x = np.random.default_rng(2).standard_normal((1, 2, 3, 4)).astype(np.float32)
    got = heli.compile(model).run({"x": x})["y"]
    flat = x.reshape(2, 12).astype(np.float64)  # legacy: softmax over all axes >= 1
    want = (np.exp(flat) / np.exp(flat).sum(axis=1, keepdims=True)).reshape(2, 3, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_too_new_opset_is_a_clear_error():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor_info("x", [1])],
                       [tensor_info("y", [1])], opset=99)
    with pytest.raises(UnsupportedError, match="opset 99"):
        import_onnx(model)


def test_undefined_value_is_a_clear_error():
    model = make_model([helper.make_node("Relu", ["nope"], ["y"], name="r")],
                       [tensor_info("x", [1])], [tensor_info("y", [1])])
    with pytest.raises(ModelLoadError, match="Relu node 'r' reads 'nope'"):
        import_onnx(model)


@pytest.mark.parametrize("data, message", [
    (b"", "is empty"),
    (b"\x08\x07garbage\xff\xff\xff" * 7, "not a valid ONNX protobuf|holds no ONNX graph"),
])
def test_garbage_bytes_are_clear_errors(tmp_path, data, message):
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match=message):
        import_onnx(str(path))


def test_truncated_model_is_a_clear_error(tmp_path):
    w = numpy_helper.from_array(np.ones((32, 32), np.float32), "w")
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                       [tensor_info("x", [1, 32])], [tensor_info("y", [1, 32])], [w])
    data = model.SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated"):
        import_onnx(str(path))


def test_missing_file():
    with pytest.raises(ModelLoadError, match="does not exist"):
        import_onnx("/nonexistent/model.onnx")
