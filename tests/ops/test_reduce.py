"""Reductions, ArgMax/ArgMin and CumSum/CumProd: type inference, edge cases
(empty sets, ties, stability) and numbers against float64 oracles and ORT."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import heli
from heli._errors import ExecutionError, ShapeError
from heli.ir._types import DType, TensorType
from tests.conftest import run_onnxruntime
from tests.ops.helpers import infer_types as infer

F32 = DType.FLOAT32


def model(op_name, feeds, attrs=None, opset=18, out_type=TensorProto.FLOAT):
    """A one-node ONNX model whose inputs are all graph inputs."""
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype),
                                            a.shape) for name, a in feeds.items()]
    node = helper.make_node(op_name, list(feeds), ["y"], **(attrs or {}))
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info("y", out_type, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def run(op_name, feeds, attrs=None, opset=18, out_type=TensorProto.FLOAT):
    m = model(op_name, feeds, attrs, opset, out_type)
    return heli.compile(m, debug=True).run(feeds)["y"]


# --------------------------------------------------------------------------- inference


def test_reduce_infer_constant_axes_keeps_symbols():
    x = TensorType(F32, ("batch", "seq", 768))
    (t,) = infer("ReduceMean", [x, np.array([-1], np.int64)])
    assert t == TensorType(F32, ("batch", "seq", 1))
    (t,) = infer("ReduceSum", [x, np.array([0, 2], np.int64)], {"keepdims": 0})
    assert t == TensorType(F32, ("seq",))


def test_reduce_infer_without_axes():
    x = TensorType(F32, ("n", 3))
    assert infer("ReduceMax", [x]) == [TensorType(F32, (1, 1))]
    assert infer("ReduceMax", [x], {"keepdims": 0}) == [TensorType(F32, ())]
    empty = np.zeros(0, np.int64)
    assert infer("ReduceSum", [x, empty], {"noop_with_empty_axes": 1}) == [x]


def test_reduce_infer_runtime_axes():
    x = TensorType(F32, ("n", 1, 5))
    axes = TensorType(DType.INT64, (1,))
    (t,) = infer("ReduceSum", [x, axes])
    assert len(t.shape) == 3 and t.shape[1] == 1 and isinstance(t.shape[2], str)
    assert infer("ReduceSum", [x, axes], {"keepdims": 0}) == [TensorType(F32, None)]


def test_reduce_infer_axis_out_of_range():
    with pytest.raises(ShapeError, match="reduction axis 3 is out of range"):
        infer("ReduceL2", [TensorType(F32, (2, 3)), np.array([3], np.int64)])


def test_reduce_runtime_axis_out_of_range():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ExecutionError, match="axis -3 is out of range"):
        run("ReduceSum", {"x": x, "axes": np.array([-3], np.int64)})


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(("op_name", "identity"), [
    ("ReduceSum", 0.0), ("ReduceProd", 1.0), ("ReduceMax", -np.inf), ("ReduceMin", np.inf),
    ("ReduceL1", 0.0), ("ReduceL2", 0.0), ("ReduceSumSquare", 0.0),
    ("ReduceLogSum", -np.inf), ("ReduceLogSumExp", -np.inf),
])
def test_empty_set_gives_identity(op_name, identity):
    x = np.zeros((2, 0, 4), np.float32)
    y = run(op_name, {"x": x, "axes": np.array([1], np.int64)})
    np.testing.assert_array_equal(y, np.full((2, 1, 4), identity, np.float32))


def test_empty_set_integer_max_is_lowest_value():
    x = np.zeros((0, 3), np.int32)
    y = run("ReduceMax", {"x": x, "axes": np.array([0], np.int64)}, {"keepdims": 0},
            out_type=TensorProto.INT32)
    np.testing.assert_array_equal(y, np.full(3, np.iinfo(np.int32).min, np.int32))


def test_log_sum_exp_is_stable():
    x = np.array([[1000.0, 1000.0, 990.0], [-np.inf, -np.inf, -np.inf],
                  [-1000.0, -1001.0, -1002.0]], np.float32)
    y = run("ReduceLogSumExp", {"x": x, "axes": np.array([1], np.int64)}, {"keepdims": 0})
    x64 = x.astype(np.float64)
    peak = x64.max(1, keepdims=True)
    with np.errstate(invalid="ignore"):
        want = (np.log(np.exp(x64 - peak).sum(1)) + peak[:, 0])
    want[1] = -np.inf
    np.testing.assert_allclose(y, want, rtol=1e-6)


def test_integer_mean_truncates():
    x = np.array([[1, 2], [-1, -2]], np.int64)
    y = run("ReduceMean", {"x": x, "axes": np.array([1], np.int64)}, {"keepdims": 0},
            out_type=TensorProto.INT64)
    np.testing.assert_array_equal(y, np.array([1, -1], np.int64))


@pytest.mark.parametrize("op_name", ["ReduceSum", "ReduceMean", "ReduceL2", "ReduceLogSumExp",
                                     "ReduceSumSquare"])
def test_reductions_match_onnxruntime(op_name):
    x = (np.random.default_rng(0).standard_normal((2, 16, 8, 8)) * 3).astype(np.float32)
    feeds = {"x": x, "axes": np.array([1, -1], np.int64)}
    want = run_onnxruntime(model(op_name, feeds), feeds)["y"]
    np.testing.assert_allclose(run(op_name, feeds), want, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- ArgMax / ArgMin


def test_arg_infer():
    x = TensorType(F32, ("n", 4, "k"))
    assert infer("ArgMax", [x], {"axis": 1}) == [TensorType(DType.INT64, ("n", 1, "k"))]
    assert infer("ArgMin", [x], {"axis": -1, "keepdims": 0}) == [
        TensorType(DType.INT64, ("n", 4))]
    with pytest.raises(ShapeError, match="axis 3 is out of range"):
        infer("ArgMax", [x], {"axis": 3})


def test_arg_ties_and_select_last_index():
    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]], np.float32)
    out = TensorProto.INT64
    first = run("ArgMax", {"x": x}, {"axis": 1, "keepdims": 0}, opset=13, out_type=out)
    last = run("ArgMax", {"x": x}, {"axis": 1, "keepdims": 0, "select_last_index": 1},
               opset=13, out_type=out)
    np.testing.assert_array_equal(first, [1, 0])
    np.testing.assert_array_equal(last, [2, 3])
    low = run("ArgMin", {"x": x}, {"axis": 1, "select_last_index": 1}, opset=13, out_type=out)
    np.testing.assert_array_equal(low, [[3], [3]])


# --------------------------------------------------------------------------- CumSum / CumProd


@pytest.mark.parametrize(("exclusive", "reverse", "want"), [
    (0, 0, [[1, 2, 3], [5, 7, 9]]),
    (1, 0, [[0, 0, 0], [1, 2, 3]]),
    (0, 1, [[5, 7, 9], [4, 5, 6]]),
    (1, 1, [[4, 5, 6], [0, 0, 0]]),
])
def test_cumsum_modes(exclusive, reverse, want):
    x = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    y = run("CumSum", {"x": x, "axis": np.array(0, np.int64)},
            {"exclusive": exclusive, "reverse": reverse}, opset=14, out_type=TensorProto.INT32)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, want)


def test_cumprod_exclusive_reverse_negative_axis():
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    y = run("CumProd", {"x": x, "axis": np.array([-1], np.int32)},
            {"exclusive": 1, "reverse": 1}, opset=26, out_type=TensorProto.DOUBLE)
    np.testing.assert_array_equal(y, [[6.0, 3.0, 1.0], [30.0, 6.0, 1.0]])


def test_cumsum_axis_errors():
    with pytest.raises(ShapeError, match="axis 2 is out of range"):
        infer("CumSum", [TensorType(F32, (2, 3)), np.array(2, np.int64)])
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ExecutionError, match="axis -3 is out of range"):
        run("CumSum", {"x": x, "axis": np.array(-3, np.int64)}, opset=14)
