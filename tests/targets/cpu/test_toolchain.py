"""The cpu target's C toolchain: ISA detection, compile cache, errors, ASan."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from heli._errors import TargetError, UnsupportedError
from heli.targets.cpu import _toolchain as tc

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC") or "cc") is None,
                                reason="no C compiler")

ADD = "int heli_test_add(int a, int b) { return a + b; }\n"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private, empty kernel cache."""
    monkeypatch.setenv("HELI_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("HELI_CPU_ASAN", raising=False)
    return tmp_path / "kernels"


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".build-")]


def test_compile_load_and_call(cache):
    lib = tc.compile_library(ADD, name="add")
    assert lib.heli_test_add(2, 40) == 42
    (so,) = cache.glob("add-*.so")
    assert so.with_suffix(".c").read_text() == ADD  # the source is kept for debugging
    assert _leftovers(cache) == []


def test_cache_hit_skips_the_compiler(cache, monkeypatch):
    first = tc.build_library(ADD, name="add")
    mtime = first.stat().st_mtime_ns

    def no_compiler(*args, **kwargs):
        raise AssertionError("the compiler ran on a cache hit")

    monkeypatch.setattr(tc.subprocess, "run", no_compiler)
    again = tc.build_library(ADD, name="add")
    assert again == first and again.stat().st_mtime_ns == mtime


def test_cache_key_covers_source_flags_and_isa(cache):
    base = tc.build_library(ADD)
    assert tc.build_library(ADD + "\n") != base
    assert tc.build_library(ADD, extra_flags=("-DX=1",)) != base
    if tc.detected_isa() != "portable":
        assert tc.build_library(ADD, isa="portable") != tc.build_library(ADD, isa="avx2")
    assert len(list(cache.glob("*.so"))) >= 3


def test_concurrent_processes_build_the_same_library(cache, tmp_path):
    # Two processes start compiling the same (slow enough) source at the same
    # moment; both must load a complete library, and the cache ends up with
    # exactly one file for it and no temporary folders.
    script = tmp_path / "race.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from heli.targets.cpu import _toolchain as tc
        source = {ADD!r} + "".join(
            f"double heli_f{{i}}(double x) {{{{ return x * {{i}}.0 + {{i}}; }}}}\\n"
            for i in range(500))
        while time.time() < float(sys.argv[1]):
            pass
        lib = tc.compile_library(source, name="race")
        print(tc.build_library(source, name="race"), lib.heli_test_add(1, 2), lib.heli_f7)
    """))
    start = str(time.time() + 1.0)
    env = dict(os.environ, HELI_CACHE_DIR=str(cache.parent))
    procs = [subprocess.Popen([sys.executable, str(script), start], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
    paths = {out.split()[0] for out, _ in outs}
    assert len(paths) == 1 and all(out.split()[1] == "3" for out, _ in outs)
    assert [p.name for p in cache.glob("race-*.so")] == [Path(paths.pop()).name]
    assert _leftovers(cache) == []


def test_broken_source_is_a_clear_error(cache):
    with pytest.raises(TargetError, match="C compiler failed on kernel 'broken'") as info:
        tc.compile_library("int f(void) { return undefined_thing; }\n", name="broken")
    assert "undefined_thing" in str(info.value)  # the compiler's own message
    assert list(cache.glob("*.so")) == [] and _leftovers(cache) == []


def test_missing_compiler_is_a_clear_error(cache, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/heli-cc")
    with pytest.raises(TargetError, match="C compiler '/nonexistent/heli-cc' was not found"):
        tc.build_library(ADD)


def test_isa_detection_and_override(monkeypatch):
    monkeypatch.delenv("HELI_CPU_ISA", raising=False)
    best = tc.detected_isa()
    assert best in tc.ISAS and tc.host_isa() == best
    assert tc.can_run("portable") and tc.can_run(best)
    flags = tc._cpuinfo_flags()
    if flags is not None and best != "portable":  # the CPU really has what was detected
        assert set(tc._ISA_FEATURES[best]) <= flags
    monkeypatch.setenv("HELI_CPU_ISA", "portable")
    assert tc.host_isa() == "portable"
    assert "-mavx2" not in tc.build_flags()
    monkeypatch.setenv("HELI_CPU_ISA", "sse9")
    with pytest.raises(TargetError, match="HELI_CPU_ISA='sse9' is not a cpu ISA level"):
        tc.host_isa()
    for isa in tc.ISAS:
        if not tc.can_run(isa):
            monkeypatch.setenv("HELI_CPU_ISA", isa)
            with pytest.raises(UnsupportedError, match="this host cannot run"):
                tc.host_isa()


def test_isa_flags_compile_the_isa(cache):
    probe = textwrap.dedent("""
        int heli_isa(void) {
        #if defined(__AVX512F__)
            return 2;
        #elif defined(__AVX2__) && defined(__FMA__)
            return 1;
        #else
            return 0;
        #endif
        }
    """)
    for level, isa in enumerate(tc.ISAS):
        if tc.can_run(isa):
            assert tc.compile_library(probe, isa=isa).heli_isa() == level


def test_num_threads(monkeypatch):
    monkeypatch.delenv("HELI_NUM_THREADS", raising=False)
    assert tc.num_threads() >= 1
    monkeypatch.setenv("HELI_NUM_THREADS", "3")
    assert tc.num_threads() == 3
    for bad in ("0", "two"):
        monkeypatch.setenv("HELI_NUM_THREADS", bad)
        with pytest.raises(TargetError, match="HELI_NUM_THREADS must be a positive integer"):
            tc.num_threads()


POOL_PROBE = textwrap.dedent("""
    #include <stdatomic.h>
    static _Atomic long hits[1000];
    static void task(void *ctx, long i) { (void)ctx; atomic_fetch_add(&hits[i], 1); }
    /* Runs ntasks tasks on nthreads threads; returns how many ran exactly once. */
    long heli_probe(long ntasks, int nthreads) {
        for (long i = 0; i < ntasks; i++) hits[i] = 0;
        heli_parallel(ntasks, task, 0, nthreads);
        long once = 0;
        for (long i = 0; i < ntasks; i++) once += hits[i] == 1;
        return once;
    }
""")


def test_thread_pool_runs_every_task_once(cache):
    lib = tc.compile_library(tc.pool_header() + POOL_PROBE, name="pool")
    lib.heli_probe.restype = ctypes.c_long
    for ntasks, threads in [(1, 2), (7, 1), (1000, 2), (1000, 4), (3, 8), (0, 2)]:
        for _ in range(20):
            assert lib.heli_probe(ntasks, threads) == ntasks, (ntasks, threads)
    stats = tc.pool_stats()
    assert stats["workers"] >= 3 and stats["jobs"] >= 60


def test_pool_header_matches_the_prelude(cache):
    # The C prelude of generated kernels declares heli_parallel itself; both
    # declarations in one file must agree (the compiler rejects a conflict).
    from heli.kernel import C_PRELUDE

    source = tc.pool_header() + C_PRELUDE.replace("#ifndef HELI_THREADPOOL_H", "#if 1", 1)
    assert tc.build_library(source + "int heli_x(void) { return 0; }\n", name="decl").is_file()


def test_kernels_leave_out_openmp(cache):
    flags = tc.build_flags()
    assert "-fopenmp" not in flags and "-fopenmp-simd" in flags and "-pthread" in flags


def _asan_runtime_or_skip() -> Path:
    try:
        return tc.asan_runtime()
    except TargetError as exc:
        pytest.skip(str(exc))


def test_asan_build_needs_the_runtime_preloaded(cache, monkeypatch):
    runtime = _asan_runtime_or_skip()
    assert runtime.is_file()
    monkeypatch.setenv("HELI_CPU_ASAN", "1")
    assert "-fsanitize=address" in tc.build_flags()
    assert tc.build_library(ADD) != tc.build_library(ADD, extra_flags=("-DNOASAN",))
    if not tc._asan_loaded():
        with pytest.raises(TargetError, match="LD_PRELOAD="):
            tc.compile_library(ADD, name="asan")


def test_asan_catches_an_overflow_in_a_kernel(cache):
    runtime = _asan_runtime_or_skip()
    script = textwrap.dedent("""
        import ctypes
        from heli.targets.cpu import _toolchain as tc
        lib = tc.compile_library(
            "void heli_poke(float *x, int n) { x[n] = 1.0f; }\\n"
            "#include <stdlib.h>\\n"
            "void heli_run(void) { float *x = malloc(4 * sizeof(float)); heli_poke(x, 4);"
            " free(x); }\\n", name="overflow")
        lib.heli_run()
    """)
    env = dict(os.environ, HELI_CACHE_DIR=str(cache.parent), HELI_CPU_ASAN="1",
               LD_PRELOAD=str(runtime), ASAN_OPTIONS="detect_leaks=0")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "heap-buffer-overflow" in result.stderr


def test_load_failure_is_a_clear_error(cache):
    bogus = cache / "not-a-library.so"
    bogus.parent.mkdir(parents=True, exist_ok=True)
    bogus.write_text("nope")
    with pytest.raises(TargetError, match="Could not load the compiled kernel"):
        tc.load_library(bogus)
    assert isinstance(tc.compile_library(ADD), ctypes.CDLL)


def test_stale_build_folders_are_cleaned_up(cache):
    cache.mkdir(parents=True, exist_ok=True)
    stale, fresh = cache / ".build-killed", cache / ".build-running"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    tc.build_library(ADD + "// new\n")
    assert not stale.exists() and fresh.exists()  # a build in progress is left alone
