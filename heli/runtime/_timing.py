"""How Heli and ONNX Runtime are timed on a small, shared, noisy machine
(used by ``heli bench`` and ``bench/cpu_vs_ort.py``).

The method (see bench/README.md for why):

* every measurement runs in its own fresh subprocess (this module, run with
  ``python -m heli.runtime._timing JOB_JSON``), so two engines' thread pools
  never spin against each other and each starts from a cold process;
* both engines get the same thread count: ONNX Runtime through
  ``intra_op_num_threads`` (graph optimizations all on), Heli through the
  ``HELI_NUM_THREADS`` / ``OMP_NUM_THREADS`` environment (and the BLAS
  variables, which the numpy-based ``ref`` target obeys);
* inside a process: compile once (or load a ``.heli`` file), warm up, then
  time many runs and keep the median latency;
* the engines alternate A B A B over several rounds, and the speed ratio
  quoted is the median of the per-round ratios, so drift in the machine's
  load hits both sides of each ratio alike;
* GFLOP/s are quoted against this machine's fp32 peak, measured at the same
  thread count with a large numpy matmul (:func:`matmul_peak`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from heli._errors import ExecutionError

__all__ = ["THREAD_VARIABLES", "Comparison", "Job", "MeasurementError", "Result", "compare",
           "matmul_peak", "measure", "median_latency", "thread_env"]

THREAD_VARIABLES = ("HELI_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS")


class MeasurementError(ExecutionError):
    """A measuring subprocess failed; ``details`` holds the end of its stderr."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class Job:
    """One measurement, run in its own subprocess."""

    engine: str  # "heli", "ort" or "peak"
    threads: int = 2
    model: str = ""  # ONNX path (heli, ort) or .heli file (heli)
    feeds: str = ""  # .npz of the feeds by input name (heli, ort)
    target: str = "ref"  # heli only (a .heli file runs on the target it was compiled for)
    matmul_size: int = 2048  # peak only
    warmup: int = 3
    min_runs: int = 20
    min_seconds: float = 1.0
    max_seconds: float = 10.0


@dataclass(frozen=True)
class Result:
    median_ms: float
    runs: int
    flops: int | None = None  # per run
    setup_s: float = 0.0  # session creation / compilation / loading
    extra: dict = field(default_factory=dict)


def thread_env(threads: int) -> dict[str, str]:
    """The environment that gives a child process ``threads`` threads, whatever engine."""
    return {**os.environ, **{name: str(threads) for name in THREAD_VARIABLES}}


def measure(job: Job, timeout: float = 1800) -> Result:
    """Run ``job`` in a fresh subprocess and return its result."""
    what = os.path.basename(job.model) if job.model else "the matmul peak"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "heli.runtime._timing", json.dumps(asdict(job))],
            env=thread_env(job.threads), capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise MeasurementError(f"The {job.engine} measurement of {what} took longer than "
                               f"{timeout:.0f} s.") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        errors = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        last = errors[-1].strip() if errors else "no message"
        raise MeasurementError(
            f"The {job.engine} measurement of {what} failed (exit code {proc.returncode}): "
            f"{last}", proc.stderr.strip()[-3000:])
    return Result(**json.loads(lines[-1]))


def median_latency(fn: Callable[[], object], job: Job) -> tuple[float, int]:
    """Warm up, then time ``fn`` until at least ``min_runs`` runs and
    ``min_seconds`` have passed (or ``max_seconds``, with at least 3 runs)."""
    for _ in range(job.warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if (len(times) >= job.min_runs and elapsed >= job.min_seconds) or (
                elapsed >= job.max_seconds and len(times) >= min(3, job.min_runs)):
            break
    return statistics.median(times) * 1e3, len(times)


@dataclass(frozen=True)
class Comparison:
    """A B A B rounds of two jobs: per-round medians and ratios (A / B)."""

    a: list[Result]
    b: list[Result]

    @property
    def ratios(self) -> list[float]:
        return [x.median_ms / y.median_ms for x, y in zip(self.a, self.b, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def a_ms(self) -> float:
        return statistics.median(r.median_ms for r in self.a)

    @property
    def b_ms(self) -> float:
        return statistics.median(r.median_ms for r in self.b)


def compare(a: Job, b: Job, rounds: int, progress: Callable[[str], None] = lambda s: None
            ) -> Comparison:
    """Alternate ``a`` and ``b``, each in a fresh process, over ``rounds`` rounds."""
    results_a: list[Result] = []
    results_b: list[Result] = []
    for i in range(rounds):
        results_a.append(measure(a))
        results_b.append(measure(b))
        progress(f"round {i + 1}/{rounds}: {a.engine} {results_a[-1].median_ms:.2f} ms, "
                 f"{b.engine} {results_b[-1].median_ms:.2f} ms")
    return Comparison(results_a, results_b)


def matmul_peak(threads: int, size: int = 2048, repeats: int = 2, **limits) -> float:
    """This machine's fp32 peak in GFLOP/s: the best of ``repeats`` fresh
    processes, each the median of many ``size``-square float32 numpy matmuls."""
    job = Job("peak", threads=threads, matmul_size=size, **limits)
    return max(2 * size**3 / (measure(job).median_ms * 1e6) for _ in range(repeats))


# -- the worker: runs inside the measuring subprocess ----------------------------

def _load_feeds(path: str) -> dict:
    import numpy as np

    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def _run_heli(job: Job) -> Result:
    import heli
    from heli.ir._stats import graph_stats
    from heli.runtime import is_artifact

    feeds = _load_feeds(job.feeds)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallback is reported through the placement
        if is_artifact(job.model):
            model = heli.load(job.model)
        else:
            model = heli.compile(job.model, target=job.target,
                                 input_shapes={k: v.shape for k, v in feeds.items()})
    (spec,) = model.specializations.values()
    setup = time.perf_counter() - start
    ms, runs = median_latency(lambda: model.run(feeds), job)
    extra = {"placement": spec.placement.counts(), "target": model.target}
    # A loaded .heli file keeps no graph to count FLOPs on.
    flops = graph_stats(spec.graph).flops if spec.graph.nodes else None
    return Result(ms, runs, flops, setup, extra)


def _run_ort(job: Job) -> Result:
    import onnxruntime as ort

    feeds = _load_feeds(job.feeds)
    start = time.perf_counter()
    options = ort.SessionOptions()
    options.intra_op_num_threads = job.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(job.model, options, providers=["CPUExecutionProvider"])
    setup = time.perf_counter() - start
    ms, runs = median_latency(lambda: session.run(None, feeds), job)
    return Result(ms, runs, None, setup)


def _run_peak(job: Job) -> Result:
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((job.matmul_size,) * 2, dtype=np.float32)
    b = rng.standard_normal((job.matmul_size,) * 2, dtype=np.float32)
    out = np.empty_like(a)
    ms, runs = median_latency(lambda: np.matmul(a, b, out=out), job)
    return Result(ms, runs, 2 * job.matmul_size**3)


WORKERS = {"heli": _run_heli, "ort": _run_ort, "peak": _run_peak}

if __name__ == "__main__":
    job = Job(**json.loads(sys.argv[1]))
    print(json.dumps(asdict(WORKERS[job.engine](job))))
