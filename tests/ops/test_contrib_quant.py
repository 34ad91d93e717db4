"""ONNX Runtime's quantized contrib ops (com.microsoft) on ``ref`` against
ONNX Runtime itself, one node each, int8 and uint8: equal up to one unit of
the output (ORT's kernels use lookup tables and fixed point)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import heli
from tests._ort import WEIGHT_MAX
from tests.conftest import run_onnxruntime

MS = "com.microsoft"


def _node_model(op: str, dtype: np.dtype, shapes: dict[str, tuple], out_shape: tuple,
                inits: dict[str, np.ndarray], inputs: list[str], out_type=None, **attrs):
    elem = TensorProto.INT8 if dtype == np.int8 else TensorProto.UINT8
    node = helper.make_node(op, inputs, ["y"], domain=MS, **attrs)
    graph = helper.make_graph(
        [node], op, [helper.make_tensor_value_info(n, elem, list(s)) for n, s in shapes.items()],
        [helper.make_tensor_value_info("y", out_type or elem, list(out_shape))],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(MS, 1)])


def _params(dtype, *names):
    r = np.random.default_rng(len(names))
    lo, hi = (-20, 20) if dtype == np.int8 else (100, 150)
    out = {}
    for n in names:
        out[f"{n}_s"] = np.float32(r.uniform(0.01, 0.1))
        out[f"{n}_z"] = np.asarray(r.integers(lo, hi), dtype)
    return out


def _data(dtype, shape, seed):
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, info.max + 1, shape).astype(dtype)


def _compare(model, feeds, tol=1):
    got = heli.compile(model, "ref").run(feeds)["y"]
    want = run_onnxruntime(model, feeds)["y"]
    assert got.dtype == want.dtype and got.shape == want.shape
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    assert diff.max() <= tol, diff.max()


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
def test_binary(op, dtype):
    inits = _params(dtype, "a", "b", "c")
    model = _node_model(op, dtype, {"a": (2, 3, 4, 5), "b": (1, 3, 1, 1)}, (2, 3, 4, 5), inits,
                        ["a", "a_s", "a_z", "b", "b_s", "b_z", "c_s", "c_z"])
    _compare(model, {"a": _data(dtype, (2, 3, 4, 5), 0), "b": _data(dtype, (1, 3, 1, 1), 1)})


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("op, attrs", [("QLinearSigmoid", {}),
                                       ("QLinearLeakyRelu", {"alpha": 0.1}),
                                       ("QLinearSoftmax", {"axis": -1, "opset": 13})])
def test_unary(op, attrs, dtype):
    inits = _params(dtype, "x", "y")
    if op == "QLinearSoftmax":   # ORT's kernel: y_scale 1/256, the full output range
        inits["y_s"] = np.float32(1 / 256)
        inits["y_z"] = np.asarray(-128 if dtype == np.int8 else 0, dtype)
    model = _node_model(op, dtype, {"x": (2, 3, 10)}, (2, 3, 10), inits,
                        ["x", "x_s", "x_z", "y_s", "y_z"], **attrs)
    _compare(model, {"x": _data(dtype, (2, 3, 10), 2)})


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_global_average_pool(dtype):
    inits = _params(dtype, "x", "y")
    model = _node_model("QLinearGlobalAveragePool", dtype, {"x": (1, 4, 5, 6)}, (1, 4, 1, 1),
                        inits, ["x", "x_s", "x_z", "y_s", "y_z"], channels_last=0)
    _compare(model, {"x": _data(dtype, (1, 4, 5, 6), 3)})


@pytest.mark.parametrize("quantized_output", [True, False])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_qgemm(dtype, quantized_output):
    r = np.random.default_rng(4)
    inits = _params(dtype, "a", "y")
    # weights ORT multiplies exactly on this host (tests/_ort.py)
    w = r.integers(-WEIGHT_MAX, WEIGHT_MAX + 1, (5, 6)).astype(np.int8)
    inits.update({"w": w, "w_s": np.float32(0.02),
                  "w_z": np.int8(0), "c": r.integers(-500, 500, 5).astype(np.int32)})
    names = ["a", "a_s", "a_z", "w", "w_s", "w_z", "c"]
    if quantized_output:
        names += ["y_s", "y_z"]
    else:
        inits.pop("y_s"), inits.pop("y_z")
    model = _node_model("QGemm", dtype, {"a": (3, 6)}, (3, 5), inits, names,
                        out_type=None if quantized_output else TensorProto.FLOAT, transB=1)
    feeds = {"a": _data(dtype, (3, 6), 5)}
    if quantized_output:
        _compare(model, feeds)
    else:
        got = heli.compile(model, "ref").run(feeds)["y"]
        np.testing.assert_allclose(got, run_onnxruntime(model, feeds)["y"], rtol=1e-5, atol=1e-5)
