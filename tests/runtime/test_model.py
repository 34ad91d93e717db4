import numpy as np
import pytest
from onnx import helper

import heli
from heli._errors import InputError, ShapeError
from tests.frontend.test_onnx import make_model, tensor_info


def relu_model(shape=("batch", 3, "h", "w")):
    return make_model([helper.make_node("Relu", ["x"], ["y"])],
                      [tensor_info("x", list(shape))], [tensor_info("y", None)])


def test_run_takes_feeds_by_name_and_returns_outputs_by_name():
    model = heli.compile(relu_model())
    x = np.array([[[[-1.0, 2.0]]] * 3], np.float32).reshape(1, 3, 1, 2)
    out = model.run({"x": x})
    assert list(out) == ["y"] and out["y"].tolist() == np.maximum(x, 0).tolist()
    assert model.input_names == ["x"] and model.output_names == ["y"]


def test_each_new_shape_compiles_one_cached_specialization():
    model = heli.compile(relu_model())
    for shape in [(1, 3, 4, 4), (2, 3, 4, 4), (1, 3, 4, 4)]:
        model.run({"x": np.zeros(shape, np.float32)})
    assert sorted(model.specializations) == [((1, 3, 4, 4),), ((2, 3, 4, 4),)]
    spec = model.specializations[((2, 3, 4, 4),)]
    assert spec.graph.outputs[0].type.shape == (2, 3, 4, 4)


def test_input_shapes_bind_at_compile_time():
    model = heli.compile(relu_model(), input_shapes={"x": (1, 3, 48, 320)})
    (spec,) = model.specializations.values()
    assert spec.graph.inputs[0].type.shape == (1, 3, 48, 320)


def test_static_dimension_mismatch_is_clear():
    model = heli.compile(relu_model())
    with pytest.raises(ShapeError, match=r"static size 3 on axis 1.*got 4"):
        model.run({"x": np.zeros((1, 4, 2, 2), np.float32)})


def test_symbol_bound_inconsistently_is_clear():
    model = make_model([helper.make_node("Add", ["a", "b"], ["y"])],
                       [tensor_info("a", ["n"]), tensor_info("b", ["n"])], [tensor_info("y", None)])
    with pytest.raises(ShapeError, match="The dimension 'n' is 2 in input 'a' but 3 in input 'b'"):
        heli.compile(model).run({"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)})


def test_feed_errors_name_the_problem():
    model = heli.compile(relu_model())
    x = np.zeros((1, 3, 2, 2), np.float32)
    with pytest.raises(InputError, match=r"missing input\(s\) \['x'\]"):
        model.run({})
    with pytest.raises(InputError, match=r"unknown input\(s\) \['z'\]"):
        model.run({"x": x, "z": x})
    with pytest.raises(InputError, match="dtype 'float32', but the feed has dtype 'float64'"):
        model.run({"x": x.astype(np.float64)})
    with pytest.raises(InputError, match="must have rank 4"):
        model.run({"x": np.zeros((3, 2), np.float32)})


def test_unknown_target_is_clear():
    with pytest.raises(heli.TargetError, match="There is no target named 'nope'"):
        heli.compile(relu_model(), target="nope")


def test_torch_module_compiles_through_onnx_export():
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.randn(3, 4)
    model = heli.compile(module, example_inputs=(x,))
    (got,) = model.run({"input_0": x.numpy()}).values()
    np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=1e-5, atol=1e-6)
