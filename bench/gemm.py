"""SGEMM throughput: Heli's C sgemm (``heli.targets.cpu._gemm``) against
numpy's float32 matmul (OpenBLAS), on GEMM shapes of ResNet-18 convolutions
(as im2col GEMMs: M = output pixels, N = output channels, K = Cin*kh*kw)
and BERT-base layers (M = tokens).

Each engine runs in its own long-lived subprocess (its thread count fixed
by OPENBLAS_NUM_THREADS / HELI_NUM_THREADS at start); the parent asks them
in turn, A B A B ..., to time one shape, and reports the median over rounds
of the per-round ratio to numpy, which is robust on a noisy shared machine.

    .venv/bin/python bench/gemm.py [--rounds 7] [--threads 1 2] [--isa avx2] [--time 0.25]
    .venv/bin/python bench/gemm.py --threads 1 --clock cpu    # steadier on a busy machine
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

SHAPES = [  # (name, M, N, K)
    ("resnet18 conv2_x 3x3", 3136, 64, 576),
    ("resnet18 conv3_x 3x3", 784, 128, 1152),
    ("resnet18 conv4_x 3x3", 196, 256, 2304),
    ("resnet18 conv5_x 3x3", 49, 512, 4608),
    ("bert qkv/out proj", 128, 768, 768),
    ("bert ffn up", 128, 3072, 768),
]

ENGINES = ("numpy", "heli", "heli-prepacked")


# ------------------------------------------------------------------ worker

def _worker(engine: str, seconds: float, clock: str) -> None:
    """Serve "M N K" lines from stdin with a GFLOP/s line each."""
    import numpy as np

    # "cpu": this thread's CPU time, blind to time spent descheduled (only
    # meaningful on one thread, where all the work runs on this thread).
    now = time.thread_time if clock == "cpu" else time.perf_counter

    if engine != "numpy":
        from heli.targets.cpu import _gemm

        _gemm.library()  # compile (or load) before timing
    rng = np.random.default_rng(0)
    for line in sys.stdin:
        m, n, k = map(int, line.split())
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = np.empty((m, n), dtype=np.float32)
        if engine == "numpy":
            def call(a=a, b=b, c=c):
                np.matmul(a, b, out=c)
        elif engine == "heli":
            def call(a=a, b=b, c=c):
                _gemm.sgemm(a, b, c)
        else:
            packed = _gemm.pack_b(b)

            def call(a=a, packed=packed, c=c):
                _gemm.sgemm_prepacked(a, packed, c)
        call()
        # Calls per batch so a batch lasts ~seconds/5; best of 5 batches.
        start = now()
        call()
        once = max(now() - start, 1e-7)
        reps = max(1, int(seconds / 5 / once))
        best = float("inf")
        for _ in range(5):
            start = now()
            for _ in range(reps):
                call()
            best = min(best, (now() - start) / reps)
        print(f"{2.0 * m * n * k / best / 1e9:.3f}", flush=True)


# ------------------------------------------------------------------ parent

def _start(engine: str, threads: int, seconds: float, isa: str | None,
           clock: str) -> subprocess.Popen:
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "HELI_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    if isa:
        env["HELI_CPU_ISA"] = isa
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", engine, "--time", str(seconds),
         "--clock", clock],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def _ask(proc: subprocess.Popen, m: int, n: int, k: int) -> float:
    proc.stdin.write(f"{m} {n} {k}\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"benchmark worker exited (code {proc.wait()})")
    return float(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--time", type=float, default=0.25, help="seconds per measurement")
    parser.add_argument("--pause", type=float, default=0.1,
                        help="seconds between measurements, so the other engine's idle "
                             "threads stop spinning")
    parser.add_argument("--isa", choices=["portable", "avx2", "avx512"], default=None)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: time by the worker thread's CPU time, which a noisy "
                             "machine disturbs less (one thread only)")
    parser.add_argument("--only", default="", help="run the shapes whose name contains this")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.time, args.clock)
        return
    if args.clock == "cpu" and args.threads != [1]:
        parser.error("--clock cpu measures one thread only: add --threads 1")

    from heli.targets.cpu import _gemm, _toolchain

    cfg = _gemm.library(args.isa).config
    print(f"heli sgemm: isa={cfg.isa} MRxNR={cfg.mr}x{cfg.nr} KC={cfg.kc} MC={cfg.mc} "
          f"NC={cfg.nc}; host best ISA {_toolchain.detected_isa()}; {args.clock} clock; "
          f"{args.rounds} rounds, median of per-round ratios to numpy")
    header = (f"{'shape':<22} {'M':>5} {'N':>5} {'K':>5} {'thr':>3} | {'numpy':>7} "
              f"{'heli':>7} {'ratio':>6} | {'prepack':>7} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for threads in args.threads:
        procs = {e: _start(e, threads, args.time, args.isa, args.clock) for e in ENGINES}
        try:
            for name, m, n, k in SHAPES:
                if args.only not in name:
                    continue
                results: dict[str, list[float]] = {e: [] for e in ENGINES}
                for r in range(args.rounds):
                    # Alternate who goes first, so drift in load hurts nobody.
                    order = ENGINES if r % 2 == 0 else ENGINES[::-1]
                    for e in order:
                        time.sleep(args.pause)
                        results[e].append(_ask(procs[e], m, n, k))
                ref = results["numpy"]
                ratio = {e: statistics.median(x / y for x, y in zip(results[e], ref, strict=True))
                         for e in ENGINES}
                med = {e: statistics.median(results[e]) for e in ENGINES}
                print(f"{name:<22} {m:>5} {n:>5} {k:>5} {threads:>3} | {med['numpy']:7.1f} "
                      f"{med['heli']:7.1f} {ratio['heli']:6.2f} | "
                      f"{med['heli-prepacked']:7.1f} {ratio['heli-prepacked']:6.2f}", flush=True)
        finally:
            for proc in procs.values():
                proc.stdin.close()
                proc.wait()
    print("(GFLOP/s: medians over rounds; ratio = median of per-round heli/numpy)")


if __name__ == "__main__":
    main()
