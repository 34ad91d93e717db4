"""Bad inputs the fuzzers found, one test each: every one must end in one clear
HeliError (never another exception, a hang, a huge allocation or a wrong
answer)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import AttributeProto, TensorProto, helper, numpy_helper

import heli
from heli.frontend.onnx import import_onnx
from tests.frontend.test_onnx import make_model, tensor_info

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def run(nodes, inputs, outputs, feeds, initializers=(), opset=17):
    model = make_model(nodes, inputs, outputs, initializers, opset=opset)
    return heli.compile(model.SerializeToString(), debug=True).run(feeds)


def test_dropout_with_an_omitted_mask_output_is_dropped():
    out = run([helper.make_node("Dropout", ["x"], ["y", ""])], [tensor_info("x", [3])],
              [tensor_info("y", [3])], {"x": np.ones(3, np.float32)}, opset=7)
    np.testing.assert_array_equal(out["y"], np.ones(3))


def test_required_input_left_empty():
    with pytest.raises(heli.ShapeError, match="input 0 .* empty"):
        import_onnx(make_model([helper.make_node("Dropout", ["", "r"], ["y"])],
                               [tensor_info("r", [])], [tensor_info("y", [3])]))


def test_attribute_of_the_wrong_kind():
    node = helper.make_node("Shape", ["x"], ["y"], end=0.0)  # a FLOAT where an INT belongs
    with pytest.raises(heli.ModelLoadError, match="'end' = 0.0.*int"):
        import_onnx(make_model([node], [tensor_info("x", [2, 3])], [tensor_info("y", None, I64)]))
    constant = helper.make_node("Constant", [], ["c"], value_int=1)
    constant.attribute[0].type = AttributeProto.FLOAT  # value_int now holds a float 0.0
    with pytest.raises(heli.ModelLoadError, match="wrong kind"):
        import_onnx(make_model([constant], [], [tensor_info("c", None)]))


def test_invalid_utf8_name():
    data = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu_node")],
                      [tensor_info("x", [2])], [tensor_info("y", [2])]).SerializeToString()
    with pytest.raises(heli.ModelLoadError, match="UTF-8"):
        import_onnx(data.replace(b"relu_node", b"relu_nod\xb1"))


def test_truncated_initializer_data():
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    w.raw_data = w.raw_data[:5]
    with pytest.raises(heli.ModelLoadError, match="'w' does not hold the 6 float32"):
        import_onnx(make_model([helper.make_node("Relu", ["w"], ["y"])], [],
                               [tensor_info("y", None)], [w]))


def test_input_types_against_the_onnx_schema():
    axes = numpy_helper.from_array(np.array([1.0], np.float32), "axes")
    with pytest.raises(heli.ShapeError, match="input 1 .'axes'. has type tensor.float."):
        import_onnx(make_model([helper.make_node("ReduceSum", ["x", "axes"], ["y"])],
                               [tensor_info("x", [2, 3])], [tensor_info("y", None)], [axes]))
    with pytest.raises(heli.ShapeError, match="same type"):
        import_onnx(make_model([helper.make_node("Add", ["x", "i"], ["y"])],
                               [tensor_info("x", [2]), tensor_info("i", [2], I64)],
                               [tensor_info("y", None)]))
    with pytest.raises(heli.ShapeError, match="takes at most 1"):  # axes input before opset 13
        import_onnx(make_model([helper.make_node("ReduceSum", ["x", "x"], ["y"])],
                               [tensor_info("x", [2, 3])], [tensor_info("y", None)], opset=11))


@pytest.mark.parametrize("shape", [[10**12], [2**62, 4], [1] * 40])
def test_huge_constant_shape_fails_before_allocating(shape):
    s = numpy_helper.from_array(np.array(shape, np.int64), "s")
    node = helper.make_node("ConstantOfShape", ["s"], ["y"])
    with pytest.raises(heli.ShapeError, match="HELI_MAX_TENSOR_BYTES|dimensions"):
        import_onnx(make_model([node], [], [tensor_info("y", None)], [s]))
    with pytest.raises(heli.ExecutionError, match="ConstantOfShape node 'y'.*too large"):
        run([node], [tensor_info("s", [len(shape)], I64)], [tensor_info("y", None)],
            {"s": np.array(shape, np.int64)})


@pytest.mark.parametrize("op, inputs, feeds", [
    ("Expand", ["x", "s"], {"s": np.array([10**6, 10**6])}),
    ("Tile", ["x", "s"], {"s": np.array([10**12])}),
    ("Pad", ["x", "s"], {"s": np.array([0, 10**12])}),
])
def test_huge_data_dependent_shapes(op, inputs, feeds):
    feeds = {"x": np.ones(1, np.float32), **{k: v.astype(np.int64) for k, v in feeds.items()}}
    with pytest.raises(heli.ExecutionError, match=f"{op} node 'y'.*too large"):
        run([helper.make_node(op, inputs, ["y"])],
            [tensor_info("x", [1]), tensor_info("s", [len(feeds["s"])], I64)],
            [tensor_info("y", None)], feeds)


def test_huge_range_and_non_finite_limits():
    inputs = [tensor_info(n, [], F) for n in "abc"]
    node = helper.make_node("Range", ["a", "b", "c"], ["y"])
    for limit, message in ((1e30, "too large"), (np.inf, "finite")):
        feeds = {"a": np.float32(0), "b": np.float32(limit), "c": np.float32(1)}
        with pytest.raises(heli.ExecutionError, match=message):
            run([node], inputs, [tensor_info("y", None)],
                {k: np.array(v) for k, v in feeds.items()})


def test_lrn_with_a_huge_window_is_quick():
    x = np.random.default_rng(0).standard_normal((1, 3, 2, 2)).astype(np.float32)
    huge = run([helper.make_node("LRN", ["x"], ["y"], size=2**31)],
               [tensor_info("x", [1, 3, 2, 2])], [tensor_info("y", None)], {"x": x})["y"]
    assert huge.shape == x.shape and np.isfinite(huge).all()


def test_parameters_that_would_broadcast_the_output_larger():
    x = np.ones((3, 1), np.float32)
    with pytest.raises(heli.ExecutionError, match="scale of shape \\[4\\]"):
        run([helper.make_node("LayerNormalization", ["x", "w"], ["y"], axis=-1)],
            [tensor_info("x", [3, 1]), tensor_info("w", [4])], [tensor_info("y", None)],
            {"x": x, "w": np.ones(4, np.float32)})


def test_scan_state_that_does_not_fit_the_body():
    body = helper.make_graph(
        [helper.make_node("Add", ["s", "v"], ["s2"]), helper.make_node("Identity", ["s2"], ["o"])],
        "body", [tensor_info("s", []), tensor_info("v", [])],
        [tensor_info("s2", []), tensor_info("o", [])])
    node = helper.make_node("Scan", ["init", "xs"], ["final", "all"], body=body,
                            num_scan_inputs=1)
    with pytest.raises(heli.ExecutionError, match="declares its input 's' as float32\\[\\]"):
        run([node], [tensor_info("init", [1]), tensor_info("xs", [5])],
            [tensor_info("final", None), tensor_info("all", None)],
            {"init": np.zeros(1, np.float32), "xs": np.ones(5, np.float32)})


def test_bad_feeds_and_shapes():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor_info("x", ["n", 2])],
                       [tensor_info("y", None)]).SerializeToString()
    compiled = heli.compile(model)
    big_endian = np.ones((1, 2), ">f4")
    np.testing.assert_array_equal(compiled.run({"x": big_endian})["y"], big_endian)
    with pytest.raises(heli.InputError, match="not an array"):
        compiled.run({"x": [[1.0, 2.0], [3.0]]})
    for shapes in ({"x": (2, -1)}, {"x": 5}, {"x": ("a", 2)}):
        with pytest.raises(heli.InputError, match="whole numbers >= 0"):
            heli.compile(model, input_shapes=shapes)
    with pytest.raises(heli.InputError, match="map input names"):
        heli.compile(model, input_shapes=[("x", (1, 2))])
