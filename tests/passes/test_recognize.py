"""Recognize: exported LayerNorm / GELU chains become LayerNormalization / Gelu."""

import math
import warnings

import numpy as np
import pytest
from onnx import helper, numpy_helper

import heli
from heli.passes import PassManager, Recognize
from heli.targets.ref import RefExecutable
from tests.frontend.test_onnx import make_model, tensor_info
from tests.passes.helpers import import_onnx, ops_of, rand

SHAPE = [2, 5, 16]


def const(name, value):
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def layer_norm_nodes(x, y, axes=(-1,), eps_after_sqrt=False):
    """The PyTorch exporter's LayerNorm at opset 14 (ReduceMean axes as an attribute)."""
    nodes = [
        helper.make_node("ReduceMean", [x], ["mean"], axes=list(axes)),
        helper.make_node("Sub", [x, "mean"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=list(axes)),
    ]
    if eps_after_sqrt:  # sqrt(var) + eps: a different function
        nodes += [helper.make_node("Sqrt", ["var"], ["std0"]),
                  helper.make_node("Add", ["std0", "eps"], ["std"])]
    else:
        nodes += [helper.make_node("Add", ["var", "eps"], ["var_eps"]),
                  helper.make_node("Sqrt", ["var_eps"], ["std"])]
    nodes += [
        helper.make_node("Div", ["d", "std"], ["norm"]),
        helper.make_node("Mul", ["norm", "gamma"], ["scaled"]),
        helper.make_node("Add", ["scaled", "beta"], [y]),
    ]
    return nodes


def gelu_nodes(x, y, half_first=False, mul_inverse=False, divide_by_two=False):
    """x * (erf(x / sqrt 2) + 1) * 0.5 in the exporter's order, or variants."""
    if mul_inverse:
        first = helper.make_node("Mul", ["inv_sqrt2", x], ["g_div"])
    else:
        first = helper.make_node("Div", [x, "two" if divide_by_two else "sqrt2"], ["g_div"])
    nodes = [first,
             helper.make_node("Erf", ["g_div"], ["g_erf"]),
             helper.make_node("Add", ["one", "g_erf"], ["g_add"])]
    if half_first:
        nodes += [helper.make_node("Mul", [x, "half"], ["g_half"]),
                  helper.make_node("Mul", ["g_add", "g_half"], [y])]
    else:
        nodes += [helper.make_node("Mul", [x, "g_add"], ["g_mul"]),
                  helper.make_node("Mul", ["g_mul", "half"], [y])]
    return nodes


def inits(norm_shape=(16,)):
    rng = np.random.default_rng(1)
    return [const("two", 2.0), const("eps", 1e-12), const("sqrt2", math.sqrt(2)),
            const("inv_sqrt2", 1 / math.sqrt(2)), const("one", 1.0), const("half", 0.5),
            const("gamma", rng.uniform(0.5, 1.5, norm_shape)),
            const("beta", rng.standard_normal(norm_shape))]


def model_of(nodes, norm_shape=(16,), outputs=("y",)):
    return make_model(nodes, [tensor_info("x", SHAPE)], [tensor_info(o, None) for o in outputs],
                      inits(norm_shape), opset=14)


def recognize(model):
    graph = import_onnx(model)
    return graph, PassManager([Recognize()], verify=True).run(graph)


def run_ref(graph, x):
    """The reference executor on ``graph`` as it is, with no pass run."""
    return RefExecutable(graph, check_types=True).run({"x": x})


def oracle(x, gamma, beta, axes):
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    ln = (x - mean) / np.sqrt(var + 1e-12) * gamma + beta
    return 0.5 * ln * (1 + np.vectorize(math.erf)(ln / math.sqrt(2)))


@pytest.mark.parametrize("axes", [(-1,), (1, 2)])
def test_layer_norm_and_gelu_chains_become_single_ops(axes):
    norm_shape = tuple(SHAPE[-len(axes):])
    model = model_of(layer_norm_nodes("x", "ln", axes) + gelu_nodes("ln", "y"), norm_shape)
    graph, rewritten = recognize(model)
    assert len(graph.nodes) == 14
    assert ops_of(rewritten) == ["LayerNormalization", "Gelu"]
    assert rewritten.nodes[0].attr("axis") == 3 - len(axes)
    assert rewritten.nodes[0].attr("epsilon") == pytest.approx(1e-12)
    x = rand(*SHAPE) * 3 + 1
    got, want = run_ref(rewritten, x)["y"], run_ref(graph, x)["y"]
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
    gamma, beta = (numpy_helper.to_array(t) for t in inits(norm_shape)[6:])
    np.testing.assert_allclose(got, oracle(x, gamma, beta, tuple(axes)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("half_first,mul_inverse", [(True, False), (False, True), (True, True)])
def test_gelu_variants(half_first, mul_inverse):
    model = model_of(gelu_nodes("x", "y", half_first, mul_inverse))
    graph, rewritten = recognize(model)
    assert ops_of(rewritten) == ["Gelu"]
    x = rand(*SHAPE) * 3
    np.testing.assert_allclose(run_ref(rewritten, x)["y"], run_ref(graph, x)["y"],
                               rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("nodes", [
    pytest.param(layer_norm_nodes("x", "y", eps_after_sqrt=True), id="eps-after-sqrt"),
    pytest.param(layer_norm_nodes("x", "y", axes=(1,)), id="middle-axis"),
    pytest.param(gelu_nodes("x", "y", divide_by_two=True), id="gelu-divides-by-2"),
])
def test_near_misses_are_left_alone(nodes):
    model = model_of(nodes)
    graph, rewritten = recognize(model)
    assert ops_of(rewritten) == ops_of(graph)


def test_a_chain_value_read_elsewhere_keeps_the_chain():
    # The normalized value is also a graph output: the chain cannot disappear.
    model = model_of(layer_norm_nodes("x", "y"), outputs=("y", "norm"))
    graph, rewritten = recognize(model)
    assert ops_of(rewritten) == ops_of(graph)


def test_cpu_target_runs_the_recognized_ops_without_fallback():
    model = model_of(layer_norm_nodes("x", "ln") + gelu_nodes("ln", "y"))
    x = rand(*SHAPE) * 3 + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", heli.FallbackWarning)
        compiled = heli.compile(model, target="cpu", input_shapes={"x": SHAPE})
    got = compiled.run({"x": x})["y"]
    want = run_ref(import_onnx(model), x)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
