"""Heli's main job, end to end: compile real PP-OCRv4 models and run them.

For each model: import the ONNX file, optimize it, compile it for the
target, run it on a real input (a rendered line of text) and print the
outputs next to ONNX Runtime's, with the largest absolute difference.
Then the recognition model compiled to C for the ``cpu`` target, with its
latency next to ONNX Runtime's; then the direction classifier again,
quantized to int8 with calibration on rendered text, on the reference NPU
with the default fallback (what the NPU refuses runs as generated C on
``cpu``, what ``cpu`` refuses on ``ref``): what ran where, cycles, MAC
utilization, the NPU's share of the MACs and agreement with the float model.

    python examples/demo.py [--target ref]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort

import heli
from heli.testing import ctc_decode, ocr_input, ppocr_model, rec_characters, render_text

TEXT = "One compiler, many chips"


def run_both(path, feeds: dict, target: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    start = time.perf_counter()
    shapes = {name: value.shape for name, value in feeds.items()}
    model = heli.compile(str(path), target=target, input_shapes=shapes)
    compile_s = time.perf_counter() - start
    (spec,) = model.specializations.values()
    placed = ", ".join(f"{t}: {n}" for t, n in spec.placement.counts().items())
    print(f"\n{path.name}: {len(model.graph.nodes)} nodes imported, "
          f"{len(spec.graph.nodes)} after optimization; placement {placed}")
    start = time.perf_counter()
    ours = model.run(feeds)[model.output_names[0]]
    run_s = time.perf_counter() - start
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = session.run(None, feeds)[0]
    return ours, theirs, compile_s, run_s


def report(name: str, ours: np.ndarray, theirs: np.ndarray, compile_s: float, run_s: float):
    diff = float(np.max(np.abs(ours.astype(np.float64) - theirs)))
    print(f"== {name}: output {list(ours.shape)} {ours.dtype}; "
          f"compile {compile_s:.2f} s, run {run_s * 1e3:.0f} ms")
    print(f"   heli[:6]        {np.array2string(ours.reshape(-1)[:6], precision=5)}")
    print(f"   onnxruntime[:6] {np.array2string(theirs.reshape(-1)[:6], precision=5)}")
    print(f"   max abs diff vs ONNX Runtime: {diff:.3g}")
    return diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="ref")
    args = parser.parse_args()
    print(f"Heli {heli.__version__} demo on target {args.target!r}: PP-OCRv4, input text {TEXT!r}")

    line = ocr_input(render_text(TEXT, font_size=24))
    rec = ppocr_model("rec")
    ours, theirs, c, r = run_both(rec, {"x": line}, args.target)
    report("PP-OCRv4 recognition (ch_PP-OCRv4_rec)", ours, theirs, c, r)
    chars = rec_characters(rec)
    print(f"   text read by heli:        {ctc_decode(ours, chars)[0]!r}")
    print(f"   text read by onnxruntime: {ctc_decode(theirs, chars)[0]!r}")

    upright = ocr_input(render_text("many chips", width=192, font_size=24))
    ours, theirs, c, r = run_both(ppocr_model("cls"), {"x": upright}, args.target)
    report("PP-OCR direction classifier (0° vs 180°)", ours, theirs, c, r)

    page = np.full((320, 320, 3), 255, np.uint8)
    page[100:148] = render_text(TEXT, width=320, font_size=24)
    ours, theirs, c, r = run_both(ppocr_model("det"), {"x": ocr_input(page)}, args.target)
    report("PP-OCRv4 text detection (probability map)", ours, theirs, c, r)
    print(f"   pixels marked as text (p > 0.3): heli {(ours > 0.3).sum()}, "
          f"onnxruntime {(theirs > 0.3).sum()}")

    cpu_section(rec, line, chars)
    npu_section()


def median_ms(run, feeds: dict, runs: int = 20) -> float:
    run(feeds)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(feeds)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def cpu_section(rec, line: np.ndarray, chars: list[str]) -> None:
    """The recognition model compiled to C for the `cpu` target, timed next to ORT.

    A quick in-process look (median of 20 runs, 2 threads each); bench/cpu_vs_ort.py
    is the careful measurement (separate processes, alternating rounds).
    """
    import warnings

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", heli.FallbackWarning)
        model = heli.compile(str(rec), target="cpu", input_shapes={"x": line.shape})
    compile_s = time.perf_counter() - start
    ours = model.run({"x": line})[model.output_names[0]]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(rec), options, providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"x": line})[0]
    (spec,) = model.specializations.values()
    placed = ", ".join(f"{t}: {n}" for t, n in spec.placement.counts().items())
    heli_ms = median_ms(model.run, {"x": line})
    ort_ms = median_ms(lambda f: session.run(None, f), {"x": line})
    print(f"\n== PP-OCRv4 recognition compiled to C for target 'cpu' "
          f"(compile {compile_s:.1f} s; placement {placed})")
    print(f"   max abs diff vs ONNX Runtime: {float(np.max(np.abs(ours - theirs))):.3g}; "
          f"text read: {ctc_decode(ours, chars)[0]!r}")
    print(f"   latency (median of 20, 2 threads): heli cpu {heli_ms:.1f} ms, "
          f"onnxruntime {ort_ms:.1f} ms, ratio {heli_ms / ort_ms:.2f}")


CALIB_WORDS = ("invoice", "total", "Heli", "compiler", "2024-06-01", "many chips", "OCR line",
               "hello world", "receipt", "Zurich", "number 42", "systolic", "quantized",
               "open NPU", "text", "model", "batch", "tensor", "kernel", "Paris 75001")
TEST_WORDS = ("fallback", "segment", "matrix 3x3", "Berlin", "scratchpad", "weights",
              "lookup", "queue", "DMA 16 B", "calibrate", "ResNet", "MobileNet")


def cls_lines(words, seed: int) -> list[np.ndarray]:
    """Rendered 48x192 text lines, every other one turned by 180 degrees."""
    r = np.random.default_rng(seed)
    return [ocr_input(render_text(w, width=192, font_size=int(r.integers(18, 31)),
                                  rotate=k % 2 == 1)) for k, w in enumerate(words)]


def npu_section() -> None:
    """The direction classifier quantized to int8 and run on the reference NPU."""
    import warnings
    from collections import Counter

    from heli.cli._explain import node_macs
    from heli.passes import QdqToInt
    from heli.quant import quantize

    path = str(ppocr_model("cls"))
    shapes = {"x": (1, 3, 48, 192)}
    start = time.perf_counter()
    calib = [{"x": x} for x in cls_lines(CALIB_WORDS, 0)]
    qgraph = QdqToInt().apply(quantize(path, calib, input_shapes=shapes, outputs=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", heli.FallbackWarning)
        npu = heli.compile(qgraph, target="npu", input_shapes=shapes)  # fallback cpu, ref
        images = cls_lines(TEST_WORDS, 1)
        first = npu.run({"x": images[0]})
    prep_s = time.perf_counter() - start
    (spec,) = npu.specializations.values()
    stages = [s for s in spec.stages if s.target == "npu"]
    reports = [(s.executable.estimate(), s.executable.program) for s in stages]
    cycles = sum(r.cycles for r, _ in reports)
    useful = sum(sum(p.macs.values()) for _, p in reports)
    dim = reports[0][0].dim if reports else 1
    total = sum(node_macs(n) for n in spec.graph.nodes)
    on_npu = sum(node_macs(n) for s in stages for n in s.graph.nodes)
    print(f"\n== PP-OCR direction classifier, int8 on the reference NPU (fallback: cpu, "
          f"then ref); calibrated on {len(calib)} rendered lines, quantize + compile + first "
          f"run {prep_s:.1f} s")
    segments = {t: sum(s.target == t for s in spec.stages) for t in spec.placement.counts()}
    print("   ran where: " + ", ".join(f"{t} {n} nodes in {segments[t]} segments"
                                       for t, n in spec.placement.counts().items()))
    for target in (t for t in spec.placement.counts() if t != "npu"):
        ops = Counter(n.op.name for s in spec.stages if s.target == target
                      for n in s.graph.nodes)
        print(f"   on {target}: " + ", ".join(f"{op} {n}" for op, n in ops.most_common()))
    print(f"   NPU share of MACs: {100 * on_npu / total:.1f}% of {total:,}")
    print(f"   cycle model: {cycles:,} cycles ({cycles / 1e6:.2f} ms at 1 GHz, default config), "
          f"MAC utilization {100 * useful / (dim * dim * cycles):.1f}%")
    fmodel = heli.compile(path, "ref", input_shapes=shapes)
    start, agree = time.perf_counter(), 0
    for k, x in enumerate(images):
        got = first if k == 0 else npu.run({"x": x})
        want = fmodel.run({"x": x})
        agree += int(got[npu.output_names[0]].argmax() == want[fmodel.output_names[0]].argmax())
    print(f"   class agreement with the float model: {agree}/{len(images)} "
          f"({100 * agree / len(images):.0f}%) held-out lines "
          f"({(time.perf_counter() - start) / len(images):.2f} s per line on the simulator)")


if __name__ == "__main__":
    main()
