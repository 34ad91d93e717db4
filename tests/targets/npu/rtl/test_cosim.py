"""Co-simulation of the RTL core (Verilator) against the functional simulator
(heli/targets/npu/cosim.py): randomized single Conv / MatMul layers, sizes not
multiples of DIM included, at DIM 8 and 16, and the whole PP-OCRv4 direction
classifier.  Every DRAM write of the RTL and the final DRAM must equal the
simulator's bit for bit.  Verilator is required: without it these tests fail
(``make tools`` installs it)."""

from __future__ import annotations

import numpy as np
import pytest

from heli.ir._builder import GraphBuilder
from heli.ir._graph import Graph
from heli.ir._ops import get_op
from heli.ir._types import DType, TensorType
from heli.target import CompileOptions
from heli.targets.npu import NpuConfig
from heli.targets.npu.cosim import cosim_program, verilator
from heli.targets.npu.target import NpuTarget
from heli.targets.ref import RefTarget


def _requant(r: np.random.Generator, channels: int) -> dict:
    return {"multiplier": tuple(int(m) for m in r.integers(1 << 30, 1 << 31, channels)),
            "shift": tuple(int(s) for s in r.integers(36, 42, channels)),
            "y_zero_point": int(r.integers(-10, 10)), "lo": -120, "hi": 125}


def conv_graph(r: np.random.Generator, c: int, h: int, w: int, co: int, k: int, stride: int,
               pad: int, group: int = 1) -> Graph:
    b = GraphBuilder("conv")
    x = b.add_input("x", TensorType(DType.INT8, (1, c, h, w)))
    wt = b.add_constant(r.integers(-127, 128, (co, c // group, k, k)).astype(np.int8), "w")
    bias = b.add_constant(r.integers(-20000, 20000, co).astype(np.int32), "b")
    (y,) = b.add_node(get_op("QConv", "heli"), [x, wt, bias], {
        "strides": (stride, stride), "pads": (pad,) * 4, "dilations": (1, 1), "group": group,
        "x_zero_point": int(r.integers(-30, 30)), **_requant(r, co)}, name="conv")
    return b.build([y], ["y"])


def matmul_graph(r: np.random.Generator, m: int, k: int, n: int) -> Graph:
    b = GraphBuilder("mm")
    a = b.add_input("x", TensorType(DType.INT8, (m, k)))
    wt = b.add_constant(r.integers(-127, 128, (k, n)).astype(np.int8), "w")
    bias = b.add_constant(r.integers(-20000, 20000, n).astype(np.int32), "b")
    (y,) = b.add_node(get_op("QMatMul", "heli"), [a, wt, bias],
                      {"a_zero_point": int(r.integers(-30, 30)), **_requant(r, n)}, name="mm")
    return b.build([y], ["y"])


def cosim_layer(graph: Graph, dim: int, seed: int):
    r = np.random.default_rng(seed)
    feeds = {v.name: r.integers(-128, 128, v.type.shape).astype(np.int8)
             for v in graph.inputs}
    program = NpuTarget(NpuConfig(dim=dim)).compile(graph, CompileOptions()).program
    report, outs = cosim_program(program, feeds)
    want = RefTarget().compile(graph, CompileOptions()).run(feeds)
    for name, expected in want.items():
        np.testing.assert_array_equal(outs[name], expected)
    assert report.stores_checked > 0 and report.rtl_cycles > 0
    return report


def test_verilator_is_installed():
    assert verilator()


# (c, h, w, co, k, stride, pad, group): sizes not multiples of DIM, strides, padding
CONVS = [(3, 9, 11, 5, 3, 1, 1, 1), (13, 7, 6, 19, 3, 2, 1, 1), (20, 5, 5, 20, 3, 1, 1, 20),
         (9, 6, 6, 7, 1, 1, 0, 1)]
MATMULS = [(37, 21, 13), (5, 40, 33)]


@pytest.mark.parametrize("dim", [8, 16])
@pytest.mark.parametrize("case", range(3))
def test_random_conv_bit_exact(dim, case):
    r = np.random.default_rng(100 * dim + case)
    c, h, w, co, k, s, p, g = CONVS[int(r.integers(len(CONVS)))]
    cosim_layer(conv_graph(r, c, h, w, co, k, s, p, g), dim, seed=case)


@pytest.mark.parametrize("dim", [8, 16])
@pytest.mark.parametrize("shape", MATMULS, ids=lambda s: "x".join(map(str, s)))
def test_matmul_bit_exact(dim, shape):
    r = np.random.default_rng(dim)
    cosim_layer(matmul_graph(r, *shape), dim, seed=1)


@pytest.mark.parametrize("case", CONVS, ids=lambda c: "x".join(map(str, c)))
def test_conv_cases_dim8(case):
    r = np.random.default_rng(7)
    cosim_layer(conv_graph(r, *case), 8, seed=2)


@pytest.fixture(scope="module")
def cls_int8():
    """PP-OCRv4's direction classifier quantized as in test_real_models.py, and
    one held-out input."""
    from heli.passes import QdqToInt
    from heli.quant import quantize
    from heli.testing import ppocr_model

    from ..test_real_models import WORDS, cls_images

    path = str(ppocr_model("cls"))
    calib = [{"x": x} for x in cls_images(WORDS, 0)]
    qgraph = QdqToInt().apply(quantize(path, calib, input_shapes={"x": (1, 3, 48, 192)},
                                       outputs=True))
    return qgraph, cls_images(("cycle model",), 1)[0]


def _cosim_cls(cls_int8, dim: int):
    from heli.targets.npu.cosim import cosim_model

    qgraph, x = cls_int8
    report, outs = cosim_model(qgraph, {"x": x}, NpuConfig(dim=dim))
    want = RefTarget().compile(qgraph, CompileOptions()).run({"x": x})
    for name, expected in want.items():
        np.testing.assert_array_equal(outs[name], expected)
    assert report.stores_checked > 1000
    print(f"\nPP-OCRv4 cls on the RTL at DIM {dim}:\n{report.table()}")
    # the bounds: whole model within 5%, every layer within 10%
    total = (report.rtl_cycles - report.model_cycles) / report.model_cycles
    assert abs(total) <= 0.05, f"RTL {report.rtl_cycles} vs model {report.model_cycles}"
    worst = max(report.layers, key=lambda lc: abs(lc.delta))
    assert abs(worst.delta) <= 0.10, f"{worst.name}: RTL {worst.rtl} vs model {worst.model}"


def test_ppocr_cls_dim8(cls_int8):
    _cosim_cls(cls_int8, 8)


@pytest.mark.slow
def test_ppocr_cls_dim16(cls_int8):
    _cosim_cls(cls_int8, 16)


_VADD = "za=0 ma=1 zb=0 mb=1 acc=0"
_NARROW = "mem=spad sram=0 dram=0 stride=4 rows=800 cols=4"   # a beat per cycle
CONTENTION = {
    # the vector unit writes a scratchpad row every cycle: each beat loses a cycle
    "load beside a fill": f"dma_load {_NARROW}\nvfill mem=spad dst=1000 rows=300 value=0",
    "fill, then load": f"vfill mem=spad dst=1000 rows=300 value=0\ndma_load {_NARROW}",
    # vadd reads a and b from one bank on every cycle: both read ports taken
    "store beside vadd, one bank": f"vadd a=1000 b=2000 dst=0 rows=300 {_VADD}\n"
                                   f"dma_store {_NARROW}",
    "store beside vadd, two banks": f"dma_store {_NARROW}\n"
                                    f"vadd a=1000 b=2001 dst=0 rows=300 {_VADD}",
    # 8-byte rows at 16 B/cycle: a beat every 2 cycles absorbs a refused row
    "wide load beside a fill": "dma_load mem=spad sram=0 dram=0 stride=8 rows=400 cols=8\n"
                               "vfill mem=spad dst=1000 rows=300 value=0",
    # the accumulator's banks have one read port: requant reads one row a cycle
    "accumulator store beside requant": "requant src=1000 dst=1000 rows=300 mult=1073741824 "
                                        "shift=31 zp=0 lo=-128 hi=127\n"
                                        "dma_store mem=acc sram=0 dram=0 stride=4 rows=800 cols=1",
    "vbias beside an accumulator store": "dma_store mem=acc sram=0 dram=0 stride=4 rows=800 "
                                         "cols=1\nvbias dst=1000 bias=999 rows=300",
    # the array writes accumulator rows while a load fills others
    "accumulator load beside matmuls": "load_weights src=3000 rows=8\n"
                                       "matmul a=1000 a_stride=1 c=1000 rows=250\n"
                                       "dma_load mem=acc sram=0 dram=0 stride=4 rows=800 cols=1",
}


@pytest.mark.parametrize("name", CONTENTION)
def test_dma_bank_contention_matches_the_cycle_model(name):
    """The banked SRAMs give the compute units priority; the cycles the DMA
    loses to them are what the cycle model predicts (within 3%), and the
    programs are bit-exact."""
    from heli.targets.npu import isa
    from heli.targets.npu.cosim import cosim_instrs
    from heli.targets.npu.cycles import TimingParams, estimate

    cfg = NpuConfig(dim=8)
    instrs = isa.assemble(CONTENTION[name] + "\nhalt")
    dram = np.random.default_rng(0).integers(0, 256, 8192).astype(np.uint8)
    report, _ = cosim_instrs(cfg, instrs, dram)
    free = estimate(instrs, cfg, timing=TimingParams(spad_banks=1 << 20, acc_banks=1 << 20))
    print(f"\n{name}: RTL {report.rtl_cycles}, model {report.model_cycles}, "
          f"model without conflicts {free.cycles}")
    assert abs(report.rtl_cycles - report.model_cycles) <= 0.03 * report.model_cycles


def test_a_wrong_store_is_named():
    """The comparison itself: a DRAM write that differs from the simulator's is
    reported with its instruction, row and cycle."""
    from heli.targets.npu import isa
    from heli.targets.npu.cosim import CosimError, RtlRun, check_stores

    prog = isa.assemble("dma_store mem=spad sram=0 dram=16 stride=4 rows=2 cols=4\nhalt")
    expected = np.zeros(64, np.uint8)
    expected[20:24] = [1, 2, 3, 4]
    good = [(16, bytes(4), 70), (20, bytes([1, 2, 3, 4]), 71)]
    run = RtlRun(expected.copy(), 80, np.array([71, -1]), good)
    assert check_stores(prog, run, expected) == 2
    bad = RtlRun(expected.copy(), 80, np.array([71, -1]), [good[0], (20, bytes([1, 2, 9, 4]), 71)])
    with pytest.raises(CosimError, match=r"instruction 0 \(dma_store .*\), row 1: the RTL wrote "
                                         r"\[1, 2, 9, 4\] to DRAM 0x14 at cycle 71"):
        check_stores(prog, bad, expected)


def test_cli_cosim(tmp_path, capsys):
    """`heli npu cosim MODEL --dim 8` on a small float CNN (conv, depthwise,
    max-pool, matmul): quantized on random samples, every NPU segment
    co-simulated, the per-layer table printed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from heli.cli._main import main

    r = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array((r.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=10),
        helper.make_node("Relu", ["c2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10, 6, 5])],
        [w("w1", 10, 3, 3, 3), w("b1", 10), w("w2", 10, 1, 3, 3), w("b2", 10)])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert main(["npu", "cosim", str(path), "--dim", "8"]) == 0
    out = capsys.readouterr().out
    assert "RTL co-simulation at DIM 8" in out and "outputs bit-exact" in out
    assert "| layer | RTL cycles | model cycles | delta |" in out and "**total**" in out
