"""Real models on the npu target (issue 4): quantized with calibration on real
inputs, run with fallback to ``ref``; the NPU's segments must equal the
integer reference bit for bit, the results must agree with the float model,
and most of the MACs must run on the NPU.  The figures are printed (``-s``)."""

from __future__ import annotations

import numpy as np
import pytest

import heli
from heli.cli._explain import node_macs
from heli.partition import partition
from heli.passes import QdqToInt
from heli.quant import quantize
from heli.targets.npu.target import NpuTarget
from heli.targets.ref import RefTarget

pytestmark = pytest.mark.filterwarnings("ignore::heli.FallbackWarning")

WORDS = ("invoice", "total", "Heli", "compiler", "2024-06-01", "many chips", "OCR line",
         "hello world", "receipt", "Zurich", "number 42", "systolic", "quantized",
         "open NPU", "text", "model", "batch", "tensor", "kernel", "Paris 75001",
         "pipeline", "accelerator", "ONNX", "int8 math")
HELD_OUT = ("fallback", "segment", "matrix 3x3", "Berlin", "scratchpad", "weights",
            "lookup", "queue", "DMA 16 B", "calibrate", "ResNet", "MobileNet", "layer 7",
            "cycle model", "PP-OCRv4", "token", "vector unit", "bias", "Tokyo", "sum 1234")


def cls_images(words, seed: int) -> list[np.ndarray]:
    """Rendered 48x192 text lines, every other one rotated by 180 degrees, in
    font sizes 18..30 (PP-OCR's direction classifier: label 0 upright, 1 turned)."""
    from heli.testing import ocr_input, render_text

    r = np.random.default_rng(seed)
    return [ocr_input(render_text(w, height=48, width=192, font_size=int(r.integers(18, 31)),
                                  rotate=k % 2 == 1)) for k, w in enumerate(words)]


def npu_mac_share(graph) -> tuple[float, int]:
    """The share of the graph's Conv / MatMul / Gemm MACs placed on the NPU
    (as ``heli explain`` counts them), and the total."""
    segments, _ = partition(graph, [NpuTarget(), RefTarget()])
    total = sum(node_macs(n) for s in segments for n in s.nodes)
    on = sum(node_macs(n) for s in segments if s.target.name == "npu" for n in s.nodes)
    return (on / total if total else 0.0), total


def compile_npu(graph):
    return heli.compile(graph, target="npu", fallback=("ref",))


@pytest.fixture(scope="module")
def cls_models():
    from heli.testing import ppocr_model

    path = str(ppocr_model("cls"))
    shapes = {"x": (1, 3, 48, 192)}
    calib = [{"x": x} for x in cls_images(WORDS, 0)]
    qgraph = QdqToInt().apply(quantize(path, calib, input_shapes=shapes, outputs=True))
    return heli.compile(path, "ref", input_shapes=shapes), qgraph


def test_ppocr_cls_on_npu(cls_models):
    fmodel, qgraph = cls_models
    ops = [n.op.qualname for n in qgraph.nodes]
    assert "Conv" not in ops and "Gemm" not in ops and "heli:QLut" in ops
    share, total = npu_mac_share(qgraph)
    npu, ref = compile_npu(qgraph), heli.compile(qgraph, "ref")
    name = fmodel.output_names[0]
    agree = 0
    images = cls_images(HELD_OUT, 1)
    for x in images:
        want = fmodel.run({"x": x})[name]
        got = npu.run({"x": x})[name]
        # the NPU's segments compute exactly the integer reference
        np.testing.assert_array_equal(got, ref.run({"x": x})[name])
        agree += int(got.argmax() == want.argmax())
    (spec,) = npu.specializations.values()
    print(f"\nPP-OCR cls on npu: class agreement with float {agree}/{len(images)} "
          f"({100 * agree / len(images):.0f}%), NPU share of MACs {100 * share:.1f}% "
          f"of {total}, placement {spec.placement.counts()}")
    assert len(images) >= 20 and agree / len(images) >= 0.95
    assert share > 0.9


@pytest.mark.parametrize("dim", (8, 16))
def test_lut_layer_bit_exact(dim):
    """heli:QLut (a table per int8 value) on the NPU equals the reference."""
    from heli.ir._builder import GraphBuilder
    from heli.ir._ops import get_op
    from heli.ir._types import DType, TensorType
    from heli.target import CompileOptions
    from heli.targets.npu import NpuConfig

    r = np.random.default_rng(dim)
    b = GraphBuilder("lut")
    x = b.add_input("x", TensorType(DType.INT8, (1, 19, 5, 7)))
    table = tuple(int(v) for v in r.integers(-128, 128, 256))
    (y,) = b.add_node(get_op("QLut", "heli"), [x], {"table": table}, name="lut")
    graph = b.build([y], ["y"])
    feeds = {"x": r.integers(-128, 128, (1, 19, 5, 7)).astype(np.int8)}
    small = NpuConfig(dim=dim, spad_bytes=dim * 64)   # several tiles
    got = NpuTarget(small).compile(graph, CompileOptions()).run(feeds)["y"]
    want = np.asarray(table, np.int8)[feeds["x"].astype(np.int16) + 128]
    np.testing.assert_array_equal(got, want)
