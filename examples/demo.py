"""Heli's main job, end to end: compile real PP-OCRv4 models and run them.

For each model: import the ONNX file, optimize it, compile it for the
target, run it on a real input (a rendered line of text) and print the
outputs next to ONNX Runtime's, with the largest absolute difference.

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


if __name__ == "__main__":
    main()
