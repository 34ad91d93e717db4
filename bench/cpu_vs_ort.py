"""Heli on a target against ONNX Runtime's CPU provider, model by model.

    python bench/cpu_vs_ort.py [--target cpu] [--models resnet18,bert_base] [--rounds 5]

For each model: Heli's and ONNX Runtime's median latency (each measured in
fresh subprocesses, alternating over rounds; see bench/_timing.py), the
median of the per-round ratios Heli / ORT (below 1: Heli is faster), Heli's
GFLOP/s (FLOPs of the optimized graph) and its share of this machine's fp32
peak, measured in the same run with a large numpy matmul at the same thread
count.  Benchmarks are not tests: nothing here runs in ``make test``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import Comparison, Job, compare, matmul_peak  # noqa: E402

SEQ = 128


@dataclass(frozen=True)
class Model:
    label: str
    path: Callable[[], Path]
    feeds: Callable[[np.random.Generator], dict[str, np.ndarray]]


def _image(shape: tuple[int, ...]) -> Callable[[np.random.Generator], dict[str, np.ndarray]]:
    def feeds(rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"x": rng.uniform(-1, 1, shape).astype(np.float32)}
    return feeds


def _cnn(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"input": rng.standard_normal((1, 3, 224, 224), dtype=np.float32)}


def _tokens(rng: np.random.Generator, length: int = 100) -> dict[str, np.ndarray]:
    """One sequence of ``SEQ`` tokens: ``length`` real ones, then padding."""
    ids = np.zeros((1, SEQ), np.int64)
    ids[0, :length] = rng.integers(1000, 30000, length)
    ids[0, 0], ids[0, length - 1] = 101, 102  # [CLS] ... [SEP]
    return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)}


def _minilm(rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = _tokens(rng)
    return {**feeds, "token_type_ids": np.zeros_like(feeds["input_ids"])}


def _models() -> dict[str, Model]:
    from heli.testing import (
        bert_base_onnx,
        minilm_onnx,
        mobilenetv2_onnx,
        ppocr_model,
        resnet18_onnx,
    )

    return {
        "resnet18": Model("ResNet-18 1x3x224x224", resnet18_onnx, _cnn),
        "mobilenetv2": Model("MobileNetV2 1x3x224x224", mobilenetv2_onnx, _cnn),
        "bert_base": Model(f"BERT-base 1x{SEQ}", bert_base_onnx, _tokens),
        "ppocr_det": Model("PP-OCRv4 det 1x3x640x640", lambda: ppocr_model("det"),
                           _image((1, 3, 640, 640))),
        "ppocr_rec": Model("PP-OCRv4 rec 1x3x48x320", lambda: ppocr_model("rec"),
                           _image((1, 3, 48, 320))),
        "minilm": Model(f"MiniLM-L6 1x{SEQ}", minilm_onnx, _minilm),
    }


@dataclass(frozen=True)
class Row:
    label: str
    comparison: Comparison

    @property
    def gflop(self) -> float | None:
        flops = self.comparison.a[0].flops
        return None if flops is None else flops / 1e9

    def gflops(self, ms: float) -> float | None:
        return None if self.gflop is None else self.gflop / (ms / 1e3)


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(rows: list[Row], peak: float, target: str, threads: int) -> str:
    lines = [
        f"| model | GFLOP | Heli `{target}` ms | ORT ms | Heli / ORT (rounds min–max) "
        f"| Heli GFLOP/s | Heli % peak | ORT % peak |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        c = row.comparison
        heli_rate, ort_rate = row.gflops(c.a_ms), row.gflops(c.b_ms)
        lines.append(
            f"| {row.label} | {_fmt(row.gflop, '.2f')} | {c.a_ms:.1f} | {c.b_ms:.1f} "
            f"| {c.ratio:.2f} ({min(c.ratios):.2f}–{max(c.ratios):.2f}) "
            f"| {_fmt(heli_rate, '.1f')} "
            f"| {_fmt(None if heli_rate is None else 100 * heli_rate / peak, '.1f')} "
            f"| {_fmt(None if ort_rate is None else 100 * ort_rate / peak, '.1f')} |"
        )
    geomean = math.exp(sum(math.log(r.comparison.ratio) for r in rows) / len(rows))
    lines.append(f"| **geometric mean** | | | | **{geomean:.2f}** | | | |")
    lines.append("")
    lines.append(f"fp32 peak (numpy matmul, {threads} thread(s)): {peak:.1f} GFLOP/s. "
                 "Heli / ORT below 1 means Heli is faster.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    models = _models()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cpu", help="Heli target (default: cpu)")
    parser.add_argument("--models", default=",".join(models),
                        help=f"comma-separated subset of: {', '.join(models)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="A B rounds per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per process")
    parser.add_argument("--runs", type=int, default=20, help="minimum timed runs per process")
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="minimum seconds of timed runs per process")
    parser.add_argument("--max-time", type=float, default=10.0,
                        help="stop timing a process after this many seconds (>= 3 runs)")
    parser.add_argument("--matmul-size", type=int, default=2048,
                        help="side of the square float32 matmul that measures the peak")
    args = parser.parse_args(argv)

    import heli
    from heli.target import get_target

    get_target(args.target)  # an unknown target fails here, with heli's own message
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in models]
    if unknown or not chosen:
        parser.error(f"unknown model(s) {unknown!r}; choose from {', '.join(models)}")

    limits = {"warmup": args.warmup, "min_runs": args.runs, "min_seconds": args.min_time,
              "max_seconds": args.max_time}
    print(f"Heli {heli.__version__} target {args.target!r} vs ONNX Runtime, "
          f"{args.threads} thread(s), {args.rounds} round(s), {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    peak_before = matmul_peak(args.threads, args.matmul_size, **limits)
    print(f"fp32 matmul peak: {peak_before:.1f} GFLOP/s", flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="heli-bench-") as tmp:
        for name in chosen:
            model = models[name]
            path = str(model.path())  # fetched or exported here, outside the timing
            feeds_path = os.path.join(tmp, f"{name}.npz")
            np.savez(feeds_path, **model.feeds(np.random.default_rng(0)))
            common = {"threads": args.threads, "model": path, "feeds": feeds_path, **limits}
            start = time.perf_counter()
            print(f"{model.label}:", flush=True)
            comparison = compare(Job("heli", target=args.target, **common), Job("ort", **common),
                                 args.rounds, progress=lambda s: print("  " + s, flush=True))
            placement = comparison.a[0].extra.get("placement", {})
            print(f"  placement {placement}, Heli compile {comparison.a[0].setup_s:.2f} s, "
                  f"{time.perf_counter() - start:.0f} s in all", flush=True)
            rows.append(Row(model.label, comparison))

    # The peak again at the end: the machine's load drifts; the better one is its capability.
    peak = max(peak_before, matmul_peak(args.threads, args.matmul_size, **limits))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print()
    print(table(rows, peak, args.target, args.threads))


if __name__ == "__main__":
    main()
