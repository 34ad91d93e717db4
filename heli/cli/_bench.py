"""``heli bench``: time a model on a Heli target, optionally against ONNX Runtime.

    heli bench model.onnx --target cpu --compare onnxruntime [--threads 2] [--rounds 5]

The method is :mod:`heli.runtime._timing`'s (the one ``bench/cpu_vs_ort.py``
uses): every measurement in a fresh subprocess with the same thread count
for both engines, Heli and ONNX Runtime alternating A B A B over rounds, the
median latency of each process, the median of the per-round ratios, and
GFLOP/s (FLOPs of Heli's optimized graph) against this machine's fp32 peak,
measured before and after with a large numpy matmul at the same thread count.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import warnings
from pathlib import Path

import numpy as np

from heli._errors import InputError


def _whole(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= {minimum}")
        return value
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench", help="time a model on a target (fresh processes, A B rounds, GFLOP/s), "
                      "optionally against ONNX Runtime")
    bench.add_argument("model", help="ONNX model file (or a compiled .heli file)")
    bench.add_argument("--target", help="Heli target (default: cpu; a .heli file runs on its "
                                        "own target)")
    bench.add_argument("--compare", choices=["onnxruntime"],
                       help="also time ONNX Runtime's CPU provider, alternating rounds")
    bench.add_argument("--threads", type=_whole(1), default=2,
                       help="threads of every engine (default: 2)")
    bench.add_argument("--rounds", type=_whole(1), default=5,
                       help="rounds (each engine once per round, fresh process; default: 5)")
    bench.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                       help="shape of a dynamic input (repeatable)")
    bench.add_argument("--seed", type=_whole(0), default=0, help="seed of the random inputs")
    bench.add_argument("--warmup", type=_whole(0), default=3,
                       help="untimed runs per process (default: 3)")
    bench.add_argument("--runs", type=_whole(1), default=20,
                       help="minimum timed runs per process (default: 20)")
    bench.add_argument("--min-time", type=_seconds, default=1.0,
                       help="minimum seconds of timed runs per process (default: 1)")
    bench.add_argument("--max-time", type=_seconds, default=10.0,
                       help="stop timing a process after this many seconds (default: 10)")
    bench.add_argument("--matmul-size", type=_whole(16), default=2048,
                       help="side of the float32 matmul that measures the peak (default: 2048)")
    bench.add_argument("--no-peak", action="store_true",
                       help="skip measuring the fp32 peak (no %% of peak column)")
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from heli.cli._commands import console
    from heli.runtime._timing import Job, Result, compare, matmul_peak, measure

    path = Path(args.model)
    if not path.is_file():
        raise InputError(f"The model file {str(path)!r} does not exist (or is not a file).")
    target, feeds = _prepare(args, path)
    if args.compare and importlib.util.find_spec("onnxruntime") is None:
        raise InputError("--compare onnxruntime needs the onnxruntime package "
                         "(pip install onnxruntime).")
    limits = {"warmup": args.warmup, "min_runs": args.runs, "min_seconds": args.min_time,
              "max_seconds": max(args.max_time, args.min_time)}
    console.print(f"{path.name} on {target!r}"
                  f"{' vs ONNX Runtime' if args.compare else ''}: {args.threads} thread(s), "
                  f"{args.rounds} round(s), inputs "
                  + ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items()))

    def progress(line: str) -> None:
        console.print("  " + line)

    peaks = []
    if not args.no_peak:
        peaks.append(matmul_peak(args.threads, args.matmul_size, **limits))
        progress(f"fp32 matmul peak: {peaks[-1]:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory(prefix="heli-bench-") as tmp:
        feeds_path = os.path.join(tmp, "feeds.npz")
        np.savez(feeds_path, **feeds)
        common = {"threads": args.threads, "model": str(path.resolve()), "feeds": feeds_path,
                  **limits}
        heli_job = Job("heli", target=target, **common)
        ort_results: list[Result] = []
        if args.compare:
            comparison = compare(heli_job, Job("ort", **common), args.rounds, progress)
            heli_results, ort_results = comparison.a, comparison.b
        else:
            heli_results = []
            for i in range(args.rounds):
                heli_results.append(measure(heli_job))
                progress(f"round {i + 1}/{args.rounds}: heli "
                         f"{heli_results[-1].median_ms:.2f} ms")
    if not args.no_peak:  # again at the end: the load drifts; the better one is the capability
        peaks.append(matmul_peak(args.threads, args.matmul_size, **limits))
    _report(console, target, heli_results, ort_results, max(peaks) if peaks else None,
            args.threads)
    return 0


def _prepare(args: argparse.Namespace, path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """The target that runs, and seeded random feeds (checked here, before any subprocess)."""
    import heli
    from heli.cli._commands import _random_feed, parse_shapes
    from heli.runtime import is_artifact
    from heli.runtime._model import bind_shapes
    from heli.target import get_target

    shapes = parse_shapes(args.input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if is_artifact(path):
            if args.compare:
                raise InputError(f"{str(path)!r} is a compiled .heli model; --compare "
                                 "onnxruntime needs the ONNX model it came from.")
            model = heli.load(path)
            if args.target not in (None, model.target):
                raise InputError(f"{str(path)!r} was compiled for the target {model.target!r}, "
                                 f"not {args.target!r}.")
            target = model.target
        else:
            target = args.target or "cpu"
            get_target(target)  # an unknown target fails now, with its own message
            model = heli.compile(str(path), target=target)  # imports only: compiles lazily
    bound = bind_shapes(model.graph, shapes)
    rng = np.random.default_rng(args.seed)
    feeds = {v.name: _random_feed(v.name, bound.get(v.name, v.type), rng) for v in model.inputs}
    return target, feeds


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _report(console, target: str, heli_results, ort_results, peak: float | None,
            threads: int) -> None:
    from rich.table import Table

    flops = heli_results[0].flops
    table = Table(show_edge=False)
    for column in ("engine", "median ms", "rounds min–max ms", "GFLOP/s", "% peak", "setup s"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    rows = [(f"heli {target}", heli_results)]
    if ort_results:
        rows.append(("onnxruntime", ort_results))
    for label, results in rows:
        latencies = [r.median_ms for r in results]
        ms = statistics.median(latencies)
        rate = None if not flops else flops / 1e9 / (ms / 1e3)
        share = None if rate is None or peak is None else 100 * rate / peak
        table.add_row(label, f"{ms:.2f}", f"{min(latencies):.2f}–{max(latencies):.2f}",
                      _fmt(rate, ".3g"), _fmt(share, ".1f"),
                      f"{statistics.median(r.setup_s for r in results):.2f}")
    console.print(table)
    placement = heli_results[0].extra.get("placement", {})
    if placement:
        console.print("placement: " + ", ".join(f"{t}: {n} nodes" for t, n in placement.items()))
    if ort_results:
        ratios = [h.median_ms / o.median_ms for h, o in zip(heli_results, ort_results,
                                                            strict=True)]
        console.print(f"Heli / ONNX Runtime: {statistics.median(ratios):.2f} (median of "
                      f"{len(ratios)} per-round ratio(s), {min(ratios):.2f}–{max(ratios):.2f}); "
                      "below 1, Heli is faster.")
    gflop = "unknown (a .heli file keeps no graph)" if flops is None else f"{flops / 1e9:.3g}"
    line = f"GFLOP per run: {gflop}"
    if peak is not None:
        line += f"; fp32 peak (numpy matmul, {threads} thread(s)): {peak:.1f} GFLOP/s"
    console.print(line + ".")
