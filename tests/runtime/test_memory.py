"""Memory planning: live tensors never share bytes, and reuse beats one buffer each."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from heli._errors import ShapeError
from heli.frontend.onnx import import_onnx
from heli.passes import PassManager, default_pipeline
from heli.runtime import Lifetime, plan_graph_memory, plan_memory
from heli.runtime._memory import max_live_bytes
from heli.runtime._model import bind_shapes
from tests.frontend.test_onnx import make_model, tensor_info


def assert_valid(plan):
    """No two tensors live at one step overlap; offsets aligned; peak bounded."""
    a = plan.alignment
    placed = [t for t in plan.lifetimes if t.size > 0]
    for t in placed:
        assert plan.offsets[t.name] % a == 0
        assert plan.offsets[t.name] + t.size <= plan.peak
    for i, t in enumerate(placed):
        for u in placed[i + 1:]:
            if t.overlaps(u):
                t0, u0 = plan.offsets[t.name], plan.offsets[u.name]
                assert t0 + t.size <= u0 or u0 + u.size <= t0, (t, u, t0, u0)
    assert max_live_bytes(plan.lifetimes) <= max_live_bytes(plan.lifetimes, a) <= plan.peak
    assert plan.peak <= plan.naive


lifetimes = st.lists(
    st.tuples(st.integers(0, 5000), st.integers(0, 40), st.integers(0, 15)),
    max_size=40,
).map(lambda items: [Lifetime(f"t{i}", size, first, first + length)
                     for i, (size, first, length) in enumerate(items)])


@settings(max_examples=150, deadline=None)
@given(lifetimes, st.sampled_from([1, 16, 64]))
def test_random_lifetimes_never_overlap_while_live(tensors, alignment):
    assert_valid(plan_memory(tensors, alignment))


def test_disjoint_lives_share_bytes_and_sizes_are_aligned():
    plan = plan_memory([Lifetime("a", 100, 0, 1), Lifetime("b", 100, 1, 2),
                        Lifetime("c", 100, 2, 3)])
    assert plan.offsets["a"] == plan.offsets["c"] != plan.offsets["b"]
    assert plan.peak == 256 and plan.naive == 384  # two 128-byte slots instead of three
    assert plan.live_bytes() == 256


def test_best_fit_uses_the_smallest_gap_that_fits():
    plan = plan_memory([
        Lifetime("p", 1024, 0, 9), Lifetime("q", 512, 0, 3), Lifetime("r", 384, 0, 9),
        Lifetime("s", 256, 0, 3), Lifetime("t", 128, 0, 9),
        Lifetime("v", 96, 5, 6),  # at step 5, q's 512 bytes and s's 256 bytes are free
    ])
    assert [plan.offsets[n] for n in "pqrst"] == [0, 1024, 1536, 1920, 2176]
    assert plan.offsets["v"] == 1920  # the smaller gap (first fit would take 1024)
    assert plan.peak == 2304


def test_bad_lifetimes_are_clear():
    with pytest.raises(ValueError, match="last used"):
        Lifetime("t", 4, 3, 2)
    with pytest.raises(ValueError, match="appears twice"):
        plan_memory([Lifetime("t", 4, 0, 1), Lifetime("t", 4, 2, 3)])


def optimized(model, shapes):
    graph = import_onnx(model)
    return PassManager(default_pipeline(bind_shapes(graph, shapes))).run(graph)


def chain_model():
    w = numpy_helper.from_array(np.ones((8, 8), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Sigmoid", ["b"], ["c"]),
             helper.make_node("Tanh", ["c"], ["y"])]
    return make_model(nodes, [tensor_info("x", ["n", 8])], [tensor_info("y", None)], [w])


def test_graph_lifetimes_exclude_inputs_and_constants_and_outputs_live_to_the_end():
    graph = optimized(chain_model(), {"x": (4, 8)})
    plan = plan_graph_memory(graph)
    lives = {t.name: t for t in plan.lifetimes}
    assert set(lives) == {"a", "b", "c", "y"}  # not x (input) nor w (constant)
    assert all(t.size == 4 * 8 * 4 for t in lives.values())
    assert lives["a"].first == 0 and lives["a"].last == 1
    assert lives["y"].last == len(graph.nodes)  # read by the caller after the last node
    assert_valid(plan)
    assert plan.peak == 2 * 128 and plan.naive == 4 * 128  # a chain needs two buffers


def test_dynamic_shapes_cannot_be_planned():
    graph = import_onnx(chain_model())
    with pytest.raises(ShapeError, match="not static"):
        plan_graph_memory(graph)


@pytest.mark.slow
def test_real_model_peak_is_well_under_the_naive_sum():
    from heli.testing import ppocr_model

    graph = optimized(str(ppocr_model("rec")), {"x": (1, 3, 48, 320)})
    plan = plan_graph_memory(graph)
    assert_valid(plan)
    assert len(plan.lifetimes) > 100
    assert plan.peak * 10 < plan.naive  # reuse cuts the footprint by > 10x
    assert plan.peak <= 1.25 * plan.live_bytes()  # close to the lower bound
