"""The kernel IR: node invariants, the visitor, schedule primitives (which must
not change results: render, compile, run, compare with numpy), lowering, and a
golden file of generated C."""

from __future__ import annotations

import ctypes
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from heli.ir._builder import GraphBuilder
from heli.ir._types import DType, TensorType
from heli.kernel import (
    Buffer,
    CDialect,
    Const,
    Kernel,
    KernelError,
    Let,
    Load,
    Loop,
    Op,
    Store,
    Transformer,
    Var,
    Visitor,
    find_loop,
    loops,
    lower_elementwise,
    lower_layer_norm,
    lower_row_mean,
    lower_softmax,
    parallel,
    render_kernel,
    render_module,
    reorder,
    split,
    unroll,
    vectorize,
)

GOLDEN = Path(__file__).with_name("golden")
needs_cc = pytest.mark.skipif(shutil.which(os.environ.get("CC") or "cc") is None,
                              reason="no C compiler")


def run_kernel(kernel: Kernel, *arrays: np.ndarray, threads: int = 2) -> None:
    """Compile ``kernel`` alone and call it on float32 ``arrays`` (in param order)."""
    from heli.targets.cpu import _toolchain

    lib = _toolchain.compile_library(render_module([kernel]), name=f"test-{kernel.name}")
    fn = getattr(lib, kernel.name)
    fn.argtypes = [ctypes.c_void_p] * len(arrays) + [ctypes.c_int]
    fn.restype = None
    fn(*[a.ctypes.data for a in arrays], threads)


def add_relu_kernel(rows: int = 6, cols: int = 37) -> Kernel:
    """y[r, c] = max(x[r, c] + b[c], 0): two nested loops, a broadcast operand."""
    idx = Op("add", (Op("mul", (Var("r"), Const(cols, "i64"))), Var("c")))
    value = Op("add", (Load("x", idx), Load("b", Var("c"))))
    relu = Op("select", (Op("lt", (Var("t", "f32"), Const(0.0))), Const(0.0), Var("t", "f32")))
    body = (Let("t", value), Store("y", idx, relu))
    nest = Loop("r", rows, (Loop("c", cols, body),))
    return Kernel("add_relu", (Buffer("x", rows * cols), Buffer("b", cols),
                               Buffer("y", rows * cols, "out")), (nest,))


def reference_add_relu(x, b):
    return np.maximum(x + b, 0)


# ---------------------------------------------------------------- invariants

def test_nodes_are_frozen_and_replace_rejects_unknown_fields():
    loop = Loop("i", 4, [Store("y", Var("i"), Const(1.0))])
    assert isinstance(loop.body, tuple)
    with pytest.raises(TypeError, match="unknown field"):
        loop.replace(extnt=3)
    assert loop.replace(extent=3).extent == 3
    with pytest.raises(AttributeError):
        loop.extent = 5  # type: ignore[misc]


def test_op_checks_name_and_arity():
    with pytest.raises(KernelError, match="Unknown kernel op 'frob'"):
        Op("frob", (Const(1.0),))
    with pytest.raises(KernelError, match="takes 2 argument"):
        Op("add", (Const(1.0),))


def test_loop_checks_kind_and_extent():
    with pytest.raises(KernelError, match="Unknown loop kind"):
        Loop("i", 4, (), kind="gpu")
    with pytest.raises(KernelError, match="bad extent"):
        Loop("i", -1, ())


def test_visitor_raises_on_unknown_nodes():
    class OnlyConst(Visitor):
        def visit_Const(self, node):
            return node.value

    assert OnlyConst().visit(Const(2.0)) == 2.0
    with pytest.raises(KernelError, match="cannot visit a Var"):
        OnlyConst().visit(Var("i"))
    with pytest.raises(KernelError, match="cannot visit a str"):
        Transformer().visit("not a node")


def test_renderer_rejects_an_op_the_dialect_lacks():
    class Tiny(CDialect):
        code_for_op = {k: v for k, v in CDialect.code_for_op.items() if k != "erf"}

    kernel = Kernel("k", (Buffer("y", 1, "out"),), (Store("y", Const(0, "i64"),
                                                          Op("erf", (Const(1.0),))),))
    with pytest.raises(KernelError, match="cannot render kernel op 'erf'"):
        render_kernel(kernel, Tiny())


# ---------------------------------------------------------- schedule errors

def test_schedule_errors_name_the_problem():
    kernel = add_relu_kernel()
    with pytest.raises(KernelError, match="no loop over 'q'"):
        split(kernel, "q", 4)
    with pytest.raises(KernelError, match="positive integer"):
        split(kernel, "c", 0)
    with pytest.raises(KernelError, match="not innermost"):
        vectorize(kernel, "r")
    with pytest.raises(KernelError, match="more than"):
        unroll(kernel, "c", max_extent=8)
    with pytest.raises(KernelError, match="inside a parallel loop"):
        parallel(parallel(kernel, "r"), "c")
    with pytest.raises(KernelError, match="already used"):
        split(kernel, "c", 4, outer="r")


def test_split_shapes_the_loops():
    kernel = split(add_relu_kernel(cols=37), "c", 8)
    outer, inner = find_loop(kernel, "c_o"), find_loop(kernel, "c_i")
    assert (outer.extent, inner.extent) == (5, 8)  # ceil(37 / 8), with a guarded tail
    assert "if (" in render_kernel(kernel)
    exact = split(add_relu_kernel(cols=32), "c", 8)
    assert "if (" not in render_kernel(exact)


def test_reorder_needs_a_perfect_nest():
    kernel = reorder(add_relu_kernel(), ["c", "r"])
    assert [lp.var for lp in loops(kernel)] == ["c", "r"]
    softmax = lower_softmax(4, 8)
    with pytest.raises(KernelError, match="perfectly nested"):
        reorder(softmax, ["r", "i"])


# ------------------------------------------ schedules preserve semantics

SCHEDULES = {
    "none": lambda k: k,
    "vectorize": lambda k: vectorize(k, "c"),
    "parallel": lambda k: parallel(k, "r"),
    "split_tail": lambda k: vectorize(split(k, "c", 8), "c_i"),
    "split_outer_parallel": lambda k: parallel(split(k, "r", 4), "r_o"),
    "reorder": lambda k: reorder(k, ["c", "r"]),
    "reorder_parallel_vectorize": lambda k: vectorize(parallel(reorder(k, ["c", "r"]), "c"),
                                                      "r"),
    "unroll_rows": lambda k: unroll(k, "r"),
    "split_unroll": lambda k: unroll(split(k, "c", 4), "c_i"),
    "everything": lambda k: unroll(vectorize(parallel(split(split(k, "c", 16), "r", 2),
                                                      "r_o"), "c_i"), "r_i"),
}


@needs_cc
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedules_preserve_results(name):
    rng = np.random.default_rng(0)
    kernel = SCHEDULES[name](add_relu_kernel(6, 37)).replace(name=f"add_relu_{name}")
    x = rng.standard_normal((6, 37), dtype=np.float32)
    b = rng.standard_normal(37, dtype=np.float32)
    y = np.full_like(x, np.nan)
    run_kernel(kernel, x, b, y)
    np.testing.assert_array_equal(y, reference_add_relu(x, b))


@needs_cc
def test_unrolled_reductions_keep_their_accumulator():
    softmax = unroll(lower_softmax(3, 8, name="softmax_unrolled"), "r")
    assert not any(lp.var == "r" for lp in loops(softmax))
    x = np.random.default_rng(1).standard_normal((3, 8), dtype=np.float32)
    y = np.empty_like(x)
    run_kernel(softmax, x, y)
    e = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ lowering

def _ew_graph(shapes, build):
    b = GraphBuilder("ew")
    xs = [b.add_input(f"x{i}", TensorType(DType.FLOAT32, s)) for i, s in enumerate(shapes)]
    out = build(b, xs)
    return b.build([out])


@needs_cc
def test_elementwise_lowering_broadcasts_like_numpy():
    def build(b, xs):
        (t,) = b.add_node("Add", [xs[0], xs[1]])
        (t,) = b.add_node("Mul", [t, xs[2]])
        c = b.add_constant(np.float32(0.5))
        (t,) = b.add_node("Sub", [t, c])
        (t,) = b.add_node("Sigmoid", [t])
        return t

    shapes = [(2, 3, 5, 4), (3, 1, 1), (1, 4)]
    graph = _ew_graph(shapes, build)
    lowered = lower_elementwise(graph, "ew_bcast")
    assert lowered.inputs == ("x0", "x1", "x2") and lowered.outputs == (graph.outputs[0].name,)
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    y = np.empty((2, 3, 5, 4), np.float32)
    run_kernel(lowered.kernel, *xs, y)
    want = 1 / (1 + np.exp(-((xs[0].astype(np.float64) + xs[1]) * xs[2] - 0.5)))
    np.testing.assert_allclose(y, want, rtol=2e-6, atol=1e-7)


def test_elementwise_lowering_coalesces_contiguous_dims():
    graph = _ew_graph([(2, 3, 4), (2, 3, 4)], lambda b, xs: b.add_node("Add", xs)[0])
    kernel = lower_elementwise(graph).kernel
    assert [lp.extent for lp in loops(kernel)] == [24]  # one flat loop (too small to split)
    big = _ew_graph([(64, 32, 32), (64, 32, 32)], lambda b, xs: b.add_node("Add", xs)[0])
    chunks = loops(lower_elementwise(big).kernel)  # split into parallel chunks of vectors
    assert [(lp.extent, lp.kind) for lp in chunks] == [(16, "parallel"), (4096, "vectorize")]
    graph = _ew_graph([(2, 3, 4), (4,)], lambda b, xs: b.add_node("Add", xs)[0])
    assert [lp.extent for lp in loops(lower_elementwise(graph).kernel)] == [6, 4]
    graph = _ew_graph([(2, 3, 4), (3, 1)], lambda b, xs: b.add_node("Add", xs)[0])
    assert [lp.extent for lp in loops(lower_elementwise(graph).kernel)] == [2, 3, 4]


@needs_cc
def test_layer_norm_and_row_mean_match_float64():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 96), dtype=np.float32) * 3 + 1
    scale = rng.standard_normal(96, dtype=np.float32)
    bias = rng.standard_normal(96, dtype=np.float32)
    y = np.empty_like(x)
    run_kernel(lower_layer_norm(5, 96, 1e-5, True), x, scale, bias, y)
    x64 = x.astype(np.float64)
    mean = x64.mean(1, keepdims=True)
    want = (x64 - mean) / np.sqrt(x64.var(1, keepdims=True) + 1e-5) * scale + bias
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    m = np.empty(5, np.float32)
    run_kernel(lower_row_mean(5, 96), x, m)
    np.testing.assert_allclose(m, mean.reshape(-1), rtol=1e-5, atol=1e-6)


@needs_cc
def test_vectorizable_exp_and_erf_are_accurate():
    def build(b, xs):
        (e,) = b.add_node("Exp", [xs[0]])
        (r,) = b.add_node("Erf", [xs[1]])
        (t,) = b.add_node("Add", [e, r])
        return t

    n = 20001
    graph = _ew_graph([(n,), (n,)], build)
    lowered = lower_elementwise(graph, "exp_erf")
    xe = np.linspace(-80, 80, n, dtype=np.float32)
    xr = np.linspace(-6, 6, n, dtype=np.float32)
    zero = np.zeros(n, np.float32)
    y = np.empty(n, np.float32)
    run_kernel(lowered.kernel, xe, zero, y)  # exp alone (erf(0) = 0)
    np.testing.assert_allclose(y, np.exp(xe.astype(np.float64)), rtol=4e-7)
    big = np.full(n, -100.0, np.float32)  # exp(-100) underflows to about 0
    run_kernel(lowered.kernel, big, xr, y)
    want = np.array([math.erf(v) for v in xr.astype(np.float64)])
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=3e-7)


# --------------------------------------------------------------- golden C

def test_generated_c_matches_the_golden_file():
    text = render_kernel(lower_softmax(4, 8, name="heli_softmax_4x8"))
    golden = GOLDEN / "softmax_4x8.c"
    if os.environ.get("HELI_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), (
        "The generated C changed; if on purpose, rerun with HELI_UPDATE_GOLDEN=1.")
