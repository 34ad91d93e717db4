"""The npu target: integer ops lowered onto the ISA and run on the simulator
must equal the integer reference (the ``ref`` target) bit for bit; the QDQ →
integer pass; fallback to ``ref``; and a clear error for layers that do not fit."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import heli
from heli._errors import InputError, UnsupportedError
from heli.ir._builder import GraphBuilder
from heli.ir._graph import Graph
from heli.ir._ops import get_op
from heli.ir._types import DType, TensorType
from heli.partition import partition
from heli.passes import QdqToInt
from heli.quant import quantize
from heli.target import CompileOptions
from heli.targets.npu import NpuConfig
from heli.targets.npu.lower import NpuCompileError, plan_node
from heli.targets.npu.target import NpuTarget
from heli.targets.ref import RefTarget

DIMS = (8, 16)


def _requant_attrs(r: np.random.Generator, channels: int) -> dict:
    return {"multiplier": tuple(int(m) for m in r.integers(1 << 30, 1 << 31, channels)),
            "shift": tuple(int(s) for s in r.integers(36, 42, channels)),
            "y_zero_point": int(r.integers(-10, 10)), "lo": -120, "hi": 125}


def _conv_graph(r, n, c, h, w, co, k, stride, pads, group, dil=1, bias=True) -> Graph:
    b = GraphBuilder("conv")
    x = b.add_input("x", TensorType(DType.INT8, (n, c, h, w)))
    wt = b.add_constant(r.integers(-127, 128, (co, c // group, k, k)).astype(np.int8), "w")
    ins = [x, wt]
    if bias:
        ins.append(b.add_constant(r.integers(-20000, 20000, co).astype(np.int32), "b"))
    (y,) = b.add_node(get_op("QConv", "heli"), ins, {
        "strides": (stride, stride), "pads": pads, "dilations": (dil, dil), "group": group,
        "x_zero_point": int(r.integers(-30, 30)), **_requant_attrs(r, co)}, name="conv")
    return b.build([y], ["y"])


def _matmul_add_graph(r, a_shape, n) -> Graph:
    b = GraphBuilder("mm")
    a = b.add_input("a", TensorType(DType.INT8, a_shape))
    wt = b.add_constant(r.integers(-127, 128, (a_shape[-1], n)).astype(np.int8), "w")
    bias = b.add_constant(r.integers(-20000, 20000, n).astype(np.int32), "b")
    (y,) = b.add_node(get_op("QMatMul", "heli"), [a, wt, bias],
                      {"a_zero_point": int(r.integers(-30, 30)), **_requant_attrs(r, n)},
                      name="mm")
    (z,) = b.add_node(get_op("QAdd", "heli"), [y, y], {
        "a_zero_point": 3, "a_multiplier": 16384, "b_zero_point": -2, "b_multiplier": -9000,
        "multiplier": (1500000000,), "shift": (45,), "y_zero_point": 1, "lo": -50,
        "hi": 127}, name="add")
    return b.build([z, y], ["z", "y"])


def _pool_graph(shape, k, s, pads) -> Graph:
    b = GraphBuilder("pool")
    x = b.add_input("x", TensorType(DType.INT8, shape))
    (y,) = b.add_node(get_op("QMaxPool", "heli"), [x],
                      {"kernel_shape": (k, k), "strides": (s, s), "pads": pads}, name="pool")
    return b.build([y], ["y"])


def _assert_npu_equals_ref(graph: Graph, config: NpuConfig, r: np.random.Generator) -> None:
    target = NpuTarget(config)
    for node in graph.nodes:
        answer = target.supports(node)
        assert answer, answer.reason
    feeds = {v.name: r.integers(-128, 128, v.type.shape).astype(np.int8) for v in graph.inputs}
    got = target.compile(graph, CompileOptions()).run(feeds)
    want = RefTarget().compile(graph, CompileOptions(debug=True)).run(feeds)
    for name, expected in want.items():
        assert got[name].dtype == expected.dtype and got[name].shape == expected.shape
        np.testing.assert_array_equal(got[name], expected)


CONV_CASES = [  # n, c, h, w, co, k, stride, pads, group, dilation
    (1, 3, 7, 9, 5, 3, 1, (1, 1, 1, 1), 1, 1),
    (2, 20, 9, 6, 17, 3, 2, (0, 1, 2, 1), 1, 1),
    (1, 24, 8, 8, 24, 3, 1, (1, 1, 1, 1), 24, 1),     # depthwise
    (1, 19, 10, 7, 19, 3, 2, (1, 1, 1, 1), 19, 1),    # depthwise, strided, odd channels
    (1, 16, 6, 6, 32, 3, 1, (1, 1, 1, 1), 16, 1),     # depthwise, channel multiplier 2
    (1, 12, 9, 9, 6, 3, 2, (1, 0, 1, 0), 3, 1),       # grouped
    (1, 5, 6, 6, 7, 1, 1, (0, 0, 0, 0), 1, 1),        # 1x1
    (1, 9, 11, 10, 11, 3, 1, (2, 2, 2, 2), 1, 2),     # dilated
    (1, 33, 5, 5, 35, 5, 3, (2, 1, 0, 2), 1, 1),
    (1, 4, 1, 13, 3, 1, 1, (0, 0, 0, 0), 1, 1),
]


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c[:6])))
def test_conv_bit_exact(dim, case):
    r = np.random.default_rng(hash(case) % 2**32 + dim)
    *shape, dil = case
    _assert_npu_equals_ref(_conv_graph(r, *shape, dil=dil), NpuConfig(dim=dim), r)


PACKED_CASES = [  # few input channels: the taps are packed into the K dimension
    (1, 3, 7, 9, 5, 3, 1, (1, 1, 1, 1), 1, 1),
    (2, 3, 19, 17, 21, 7, 2, (3, 2, 3, 1), 1, 1),     # a ResNet-like stem, batch 2
    (1, 4, 12, 10, 6, 5, 3, (0, 2, 1, 2), 1, 1),
    (1, 2, 9, 9, 3, 3, 1, (0, 0, 0, 0), 1, 1),        # no padding
]


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("case", PACKED_CASES, ids=lambda c: "x".join(map(str, c[:6])))
def test_packed_tap_conv_bit_exact(dim, case):
    r = np.random.default_rng(hash(case) % 2**32 + dim)
    *shape, dil = case
    graph = _conv_graph(r, *shape, dil=dil)
    plan = plan_node(graph.nodes[0], NpuConfig(dim=dim))
    assert plan.pre is not None
    _assert_npu_equals_ref(graph, NpuConfig(dim=dim), r)


@pytest.mark.parametrize("dim", DIMS)
def test_packed_tap_conv_tiled_to_small_srams(dim):
    r = np.random.default_rng(dim + 7)
    small = NpuConfig(dim=dim, spad_bytes=dim * 400, acc_bytes=4 * dim * 40)
    graph = _conv_graph(r, 2, 3, 21, 18, 19, 7, 2, (3, 3, 3, 3), 1, bias=False)
    plan = plan_node(graph.nodes[0], small)
    assert plan.pre is not None and plan.t < 11 and plan.pre.t < 11
    _assert_npu_equals_ref(graph, small, r)


def _conv_program_report(graph: Graph):
    exe = NpuTarget().compile(graph, CompileOptions())
    return exe.program, exe.estimate()


def test_packed_stem_fills_the_array_rows():
    """A 7x7 stride-2 convolution of 3 channels: ceil(147 / 16) = 10 weight
    blocks per output-channel block instead of 49 blocks of 3 rows."""
    graph = _conv_graph(np.random.default_rng(5), 1, 3, 64, 64, 32, 7, 2, (3, 3, 3, 3), 1)
    program, report = _conv_program_report(graph)
    loads = [i for i in program.instrs if i.name == "load_weights"]
    tiles = sum(1 for i in program.instrs if i.name == "requant_pc")
    assert len(loads) == 10 * tiles and sum(i.rows for i in loads) == 147 * tiles
    # in the cycle model (not timing): above 3 / 16, the most that one pass of
    # 3 weight rows per tap could reach
    assert sum(program.macs.values()) / (16 * 16 * report.cycles) > 0.25


def test_3x3_conv_keeps_the_array_busy():
    """ResNet's layer1 convolution in the cycle model: the loads of each tile
    run under the previous tile's matmuls."""
    graph = _conv_graph(np.random.default_rng(6), 1, 64, 56, 56, 64, 3, 1, (1, 1, 1, 1), 1)
    program, report = _conv_program_report(graph)
    assert sum(program.macs.values()) / (16 * 16 * report.cycles) > 0.85


@pytest.mark.parametrize("case,spad", [((1, 20, 9, 9, 17, 3, 1, (1, 1, 1, 1), 1), 2304),
                                       ((1, 3, 15, 15, 9, 7, 2, (3, 3, 3, 3), 1), 2464)])
def test_conv_with_one_buffer(case, spad):
    """Where two buffers do not fit, the loads of a tile follow the store of
    the one before (and the packed-tap pass too)."""
    r = np.random.default_rng(spad)
    graph = _conv_graph(r, *case)
    config = NpuConfig(dim=8, spad_bytes=spad, acc_bytes=4 * 8 * 64)
    plan = plan_node(graph.nodes[0], config)
    assert plan.nbuf == 1 and (plan.pre is None or plan.pre.nbuf == 1)
    _assert_npu_equals_ref(graph, config, r)


def test_many_channels_and_dilated_width_are_not_packed():
    r = np.random.default_rng(3)
    for case in [(1, 16, 8, 8, 4, 3, 1, (1, 1, 1, 1), 1), (1, 3, 6, 6, 4, 1, 1, (0,) * 4, 1)]:
        assert plan_node(_conv_graph(r, *case).nodes[0], NpuConfig()).pre is None
    dilated = _conv_graph(r, 1, 3, 9, 9, 4, 3, 1, (2, 2, 2, 2), 1, dil=2)
    assert plan_node(dilated.nodes[0], NpuConfig()).pre is None


@pytest.mark.parametrize("dim", DIMS)
def test_conv_tiled_to_small_srams_and_no_bias(dim):
    r = np.random.default_rng(dim)
    small = NpuConfig(dim=dim, spad_bytes=dim * 600, acc_bytes=4 * dim * 40)
    graph = _conv_graph(r, 2, 20, 13, 11, 19, 3, 1, (1, 2, 1, 0), 1, bias=False)
    assert NpuTarget(small).supports(graph.nodes[0])
    _assert_npu_equals_ref(graph, small, r)


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("a_shape,n", [((37, 21), 13), ((2, 5, 17), 33), ((9,), 4),
                                       ((1, 16), 16), ((70, 40), 3)])
def test_matmul_and_add_bit_exact(dim, a_shape, n):
    r = np.random.default_rng(len(a_shape) * 100 + n + dim)
    for config in (NpuConfig(dim=dim), NpuConfig(dim=dim, spad_bytes=dim * 120,
                                                 acc_bytes=4 * dim * 24)):
        _assert_npu_equals_ref(_matmul_add_graph(r, a_shape, n), config, r)


@pytest.mark.parametrize("dim", DIMS)
def test_maxpool_bit_exact(dim):
    r = np.random.default_rng(dim)
    for shape, k, s, pads in [((2, 19, 9, 10), 3, 2, (1, 1, 1, 0)), ((1, 8, 8, 8), 2, 2,
                                                                       (0, 0, 0, 0))]:
        _assert_npu_equals_ref(_pool_graph(shape, k, s, pads), NpuConfig(dim=dim), r)


def test_too_little_sram_is_a_clear_error():
    r = np.random.default_rng(0)
    graph = _conv_graph(r, 1, 64, 16, 16, 64, 3, 1, (1, 1, 1, 1), 1)
    tiny = NpuConfig(dim=8, spad_bytes=8 * 64, acc_bytes=4 * 8 * 8)
    answer = NpuTarget(tiny).supports(graph.nodes[0])
    assert not answer and "scratchpad rows" in answer.reason
    with pytest.raises(NpuCompileError, match="needs at least .* scratchpad rows"):
        NpuTarget(tiny).compile(graph, CompileOptions())
    with pytest.raises(UnsupportedError, match="scratchpad rows"):
        partition(graph, [NpuTarget(tiny)])


# -- quantized models end to end -----------------------------------------------------------


def _tiny_cnn():
    r = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array((r.standard_normal(shape) * 0.3).astype(np.float32), name)

    inits = [w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 8, 1, 3, 3), w("b2", 8),
             w("w3", 12, 8, 1, 1), w("b3", 12), w("w4", 6, 12, 3, 3), w("b4", 6),
             w("w5", 24, 12), w("w6", 10, 12), w("b6", 10)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8,
                         strides=[2, 2]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Conv", ["r3", "w4", "b4"], ["c4"], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c4", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "w5"], ["m5"]),
        helper.make_node("Relu", ["m5"], ["r5"]),
        helper.make_node("Gemm", ["r5", "w6", "b6"], ["y"], transB=1),
    ]
    inits.append(numpy_helper.from_array(np.array([2, 24], np.int64), "shape"))
    inits += [numpy_helper.from_array(np.array(0, np.float32), "lo"),
              numpy_helper.from_array(np.array(6, np.float32), "hi")]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def quantized():
    r = np.random.default_rng(1)
    samples = [{"x": r.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    qdq = quantize(_tiny_cnn(), samples)
    return qdq, QdqToInt().apply(qdq), samples


def test_qdq_to_int_fuses_the_chains(quantized):
    qdq, graph, samples = quantized
    ops = [n.op.qualname for n in graph.nodes]
    assert ops.count("heli:QConv") == 3 and "heli:QMaxPool" in ops and "heli:QMatMul" in ops
    assert ops.count("Conv") == 1 and "MatMul" not in ops  # the last Conv has no Q after it
    # close to the float QDQ graph it came from (integer requantization vs float)
    want = heli.compile(qdq, "ref").run(samples[0])["y"]
    got = heli.compile(graph, "ref").run(samples[0])["y"]
    np.testing.assert_allclose(got, want, atol=0.05 * np.abs(want).max())


def test_keep_float_leaves_a_layer_for_ref():
    r = np.random.default_rng(2)
    samples = [{"x": r.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(2)]
    qdq = quantize(_tiny_cnn(), samples, outputs=True, keep_float=["c3"])  # an output name
    graph = QdqToInt().apply(qdq)
    ops = [n.op.qualname for n in graph.nodes]
    assert ops.count("Conv") == 1 and ops.count("heli:QConv") == 3
    (conv,) = [n for n in graph.nodes if n.op.qualname == "Conv"]
    assert conv.outputs[0].name == "c3"   # not quantized: the Relu after it runs in float
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", heli.FallbackWarning)
        got = heli.compile(graph, target="npu", fallback=("ref",)).run(samples[0])["y"]
    np.testing.assert_array_equal(got, heli.compile(graph, "ref").run(samples[0])["y"])
    with pytest.raises(InputError, match="keep_float names 'nope'"):
        quantize(_tiny_cnn(), samples, keep_float=["nope"])


def test_quantized_cnn_on_npu_with_fallback_equals_ref(quantized):
    _, graph, samples = quantized
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", heli.FallbackWarning)
        model = heli.compile(graph, target="npu", fallback=("ref",))
        got = model.run(samples[1])
    want = heli.compile(graph, "ref").run(samples[1])
    np.testing.assert_array_equal(got["y"], want["y"])
    (spec,) = model.specializations.values()
    on_npu = [names for target, names in spec.placement.segments if target == "npu"]
    assert sum(len(n) for n in on_npu) == 5     # 3 QConv, QMaxPool, QMatMul


def test_quantized_cnn_on_npu_with_the_default_fallback(quantized):
    """By default what the NPU refuses runs on cpu (generated C), and what cpu
    refuses on ref; the result agrees with the NPU + ref one up to the float
    rounding of the ops between the quantized layers."""
    qdq, graph, samples = quantized
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", heli.FallbackWarning)
        model = heli.compile(graph, target="npu")
        got = model.run(samples[1])["y"]
        want = heli.compile(graph, target="npu", fallback=("ref",)).run(samples[1])["y"]
    (spec,) = model.specializations.values()
    counts = spec.placement.counts()
    assert counts["npu"] == 5 and counts.get("ref", 0) >= 1
    if shutil.which(os.environ.get("CC") or "cc"):
        assert counts["cpu"] >= 1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dim", DIMS)
def test_quantized_cnn_segments_bit_exact_at_dim(quantized, dim):
    _, graph, samples = quantized
    segments, _ = partition(graph, [NpuTarget(NpuConfig(dim=dim)), RefTarget()])
    env = {**graph.constants, **samples[2]}
    opts = CompileOptions()
    for seg in segments:
        feeds = {v.name: env[v.name] for v in seg.graph.inputs}
        out = seg.target.compile(seg.graph, opts).run(feeds)
        if seg.target.name == "npu":
            want = RefTarget().compile(seg.graph, opts).run(feeds)
            for k, v in want.items():
                np.testing.assert_array_equal(out[k], v)
        env.update(out)


def test_layers_and_cycle_report(quantized):
    _, graph, samples = quantized
    segments, _ = partition(graph, [NpuTarget(), RefTarget()])
    seg = next(s for s in segments if s.target.name == "npu")
    exe = seg.target.compile(seg.graph, CompileOptions())
    report = exe.estimate()
    names = [layer.name for layer in report.layers]
    assert [n for n in names if n != "(untagged)"] == [name for *_, name in exe.program.layers]
    assert report.macs >= sum(exe.program.macs.values()) > 0
    assert 0 < report.mac_utilization <= 1


def test_explain_cli(quantized, tmp_path, capsys):
    from heli.cli import main
    from heli.quant import save_qdq_onnx

    qdq, _, _ = quantized
    path = tmp_path / "tiny.int8.onnx"
    save_qdq_onnx(qdq, path)
    assert main(["explain", str(path), "--target", "npu"]) == 0
    out = capsys.readouterr().out
    assert "heli:QConv           npu" in out and "MACs on npu:" in out
    assert "npu segment 0:" in out and "cycles" in out
    assert "Ran where: " in out and "npu " in out.split("Ran where: ")[1]
