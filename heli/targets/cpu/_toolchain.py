"""The C toolchain of the cpu target: find the host's vector ISA, compile C
source into a shared library (cached by content), and load it with ctypes.

* **ISA.** ``host_isa()`` is ``"avx512"`` (AVX-512 F/CD/BW/DQ/VL),
  ``"avx2"`` (AVX2 + FMA) or ``"portable"``: the best level that both the CPU
  (``__builtin_cpu_supports`` in a probe program, checked against
  ``/proc/cpuinfo`` where that exists) and the C compiler can do.
  ``HELI_CPU_ISA=portable|avx2|avx512`` picks a level for testing the
  fallbacks; asking for one the host cannot run is an :class:`UnsupportedError`.
  Each level compiles with fixed ``-m`` flags (not ``-march=native``), so a
  cache shared between machines never hands one host another's code.
* **Compiling.** ``$CC`` (default ``cc``), ``-O3 -fPIC -shared -pthread
  -fopenmp-simd`` (``omp simd`` pragmas only: no OpenMP runtime) and the
  ISA's flags.  ``HELI_CPU_ASAN=1`` adds AddressSanitizer; the Python
  process must then be started with ``LD_PRELOAD=$(cc
  -print-file-name=libasan.so)`` (see :func:`asan_runtime`) and usually
  ``ASAN_OPTIONS=detect_leaks=0``, since CPython itself "leaks" at exit.
* **Cache.** ``$HELI_CACHE_DIR/kernels`` (default ``~/.cache/heli/kernels``),
  one ``<key>.so`` per source, where the key hashes the source, the
  compiler's identity and every flag.  A library is built in a private
  temporary folder in the cache and renamed into place with ``os.replace``,
  so concurrent processes never see (or load) a half-written file; two that
  build the same key at once both write complete files and the last rename
  wins.
* **Threads.** Kernels take their thread count as an argument:
  ``num_threads()`` is ``$HELI_NUM_THREADS``, else the CPUs this process may
  run on.  They run on Heli's own thread pool (``kernels/threadpool.c``, see
  there why not OpenMP), built like any library but loaded first, with
  ``RTLD_GLOBAL``, so that every kernel library of the process resolves
  ``heli_parallel`` to one shared pool (:func:`runtime`).  The pool starts
  afresh in a forked child.  ``$HELI_SPIN_US`` (read once per process) is
  how long an idle worker spins before it sleeps (default 100).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from heli._errors import TargetError, UnsupportedError

ISAS = ("portable", "avx2", "avx512")

# Bump when the way libraries are built changes without the flags changing.
_FORMAT = "2"

_BASE_FLAGS = ("-O3", "-std=gnu11", "-fPIC", "-shared", "-pthread", "-fopenmp-simd")
_X86_ISA_FLAGS = {
    "portable": (),
    "avx2": ("-mavx", "-mavx2", "-mfma", "-mf16c"),
    "avx512": ("-mavx", "-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512cd",
               "-mavx512bw", "-mavx512dq", "-mavx512vl"),
}
# What each level needs from the CPU, in __builtin_cpu_supports names (which
# are also the names of /proc/cpuinfo's flags).
_ISA_FEATURES = {
    "avx2": ("avx", "avx2", "fma", "f16c"),
    "avx512": ("avx", "avx2", "fma", "f16c", "avx512f", "avx512cd", "avx512bw",
               "avx512dq", "avx512vl"),
}
_ASAN_FLAGS = ("-fsanitize=address", "-fno-omit-frame-pointer", "-g")

_lock = threading.Lock()
_loaded: dict[Path, ctypes.CDLL] = {}


# ------------------------------------------------------------------ settings

def cache_dir() -> Path:
    """Where compiled kernels live: ``$HELI_CACHE_DIR/kernels``, default
    ``~/.cache/heli/kernels`` (``$XDG_CACHE_HOME`` respected)."""
    root = os.environ.get("HELI_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "heli")
    path = Path(root) / "kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TargetError(f"Cannot create the kernel cache folder {str(path)!r}: {exc}.") from exc
    return path


def num_threads(requested: int | None = None) -> int:
    """Threads for a kernel call: ``requested``, else ``$HELI_NUM_THREADS``,
    else the CPUs this process may run on."""
    if requested is not None:
        return max(1, int(requested))
    return _configured_threads()


def _configured_threads() -> int:
    value = os.environ.get("HELI_NUM_THREADS", "").strip()
    if value:
        try:
            count = int(value)
        except ValueError:
            count = 0
        if count < 1:
            raise TargetError(
                f"HELI_NUM_THREADS must be a positive integer, not {value!r}.")
        return count
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def asan_enabled() -> bool:
    """Whether ``HELI_CPU_ASAN`` asks for AddressSanitizer builds."""
    return os.environ.get("HELI_CPU_ASAN", "").strip().lower() not in ("", "0", "false", "no")


# ------------------------------------------------------------------ compiler

def compiler() -> list[str]:
    """The C compiler command: ``$CC`` (may carry arguments), else ``cc``."""
    command = shlex.split(os.environ.get("CC", "").strip() or "cc")
    if shutil.which(command[0]) is None:
        raise TargetError(
            f"The C compiler {command[0]!r} was not found; the cpu target compiles its "
            "kernels with one (install gcc or clang, or set CC).")
    return command


@functools.lru_cache(maxsize=8)
def _compiler_identity(command: tuple[str, ...]) -> str:
    """The compiler's version banner and target triple (part of every cache key)."""
    path = shutil.which(command[0]) or command[0]
    try:
        version = subprocess.run([*command, "--version"], capture_output=True, text=True,
                                 timeout=60)
        machine = subprocess.run([*command, "-dumpmachine"], capture_output=True, text=True,
                                 timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TargetError(f"Could not run the C compiler {command[0]!r}: {exc}.") from exc
    if version.returncode != 0:
        raise TargetError(
            f"The C compiler {command[0]!r} failed to report its version: "
            f"{(version.stderr or version.stdout).strip()[-500:]}")
    return "\n".join([os.path.realpath(path), version.stdout.strip(), machine.stdout.strip()])


def compiler_identity() -> str:
    return _compiler_identity(tuple(compiler()))


def _is_x86() -> bool:
    return "x86_64" in compiler_identity() or "i686" in compiler_identity()


def isa_flags(isa: str) -> tuple[str, ...]:
    """The code-generation flags of an ISA level (nothing extra off x86)."""
    if isa not in ISAS:
        raise TargetError(f"Unknown cpu ISA {isa!r}; choose from {list(ISAS)!r}.")
    return _X86_ISA_FLAGS[isa] if _is_x86() else ()


def build_flags(isa: str | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """Every flag a library of this ISA is compiled with (the cache key has them)."""
    isa = isa or host_isa()
    flags = [*_BASE_FLAGS, *isa_flags(isa)]
    if asan_enabled():
        flags += _ASAN_FLAGS
    return flags + list(extra)


# ----------------------------------------------------------------------- ISA

def _cpuinfo_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return None


@functools.lru_cache(maxsize=4)
def _detect(identity: str) -> str:
    """Best ISA level the CPU and the compiler both support."""
    del identity  # the cache key: a different compiler is probed again
    if not _is_x86():
        return "portable"
    features = sorted({f for feats in _ISA_FEATURES.values() for f in feats})
    # One probe, compiled with the widest flags: it proves the compiler
    # accepts them and asks the CPU (cpuid, with the OS's xsave state) which
    # features it really has.
    checks = "".join(
        f'    if (__builtin_cpu_supports("{f}")) puts("{f}");\n' for f in features)
    source = ("#include <stdio.h>\nint main(void) {\n    __builtin_cpu_init();\n"
              f"{checks}    return 0;\n}}\n")
    with tempfile.TemporaryDirectory(prefix="heli-probe-") as tmp:
        src, exe = Path(tmp) / "probe.c", Path(tmp) / "probe"
        src.write_text(source)
        compiled = subprocess.run(
            [*compiler(), "-O0", *_X86_ISA_FLAGS["avx512"], str(src), "-o", str(exe)],
            capture_output=True, text=True, timeout=120)
        if compiled.returncode != 0:
            # An old compiler without AVX-512 flags: try AVX2 alone.
            compiled = subprocess.run(
                [*compiler(), "-O0", *_X86_ISA_FLAGS["avx2"], str(src), "-o", str(exe)],
                capture_output=True, text=True, timeout=120)
            if compiled.returncode != 0:
                return "portable"
            compiler_max = "avx2"
        else:
            compiler_max = "avx512"
        try:
            ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
            have = set(ran.stdout.split()) if ran.returncode == 0 else set()
        except OSError:  # e.g. a noexec temporary folder: trust /proc/cpuinfo alone
            have = None
    cpuinfo = _cpuinfo_flags()
    if cpuinfo is not None:  # Linux clears the flags of state it does not save
        have = cpuinfo if have is None else have & cpuinfo
    if not have:
        return "portable"
    for isa in ("avx512", "avx2"):
        if ISAS.index(isa) <= ISAS.index(compiler_max) and set(_ISA_FEATURES[isa]) <= have:
            return isa
    return "portable"


def detected_isa() -> str:
    """The best ISA level this host (CPU and C compiler) can run, ignoring
    ``HELI_CPU_ISA``."""
    return _detect(compiler_identity())


def host_isa() -> str:
    """The ISA level kernels are built for: ``$HELI_CPU_ISA`` if set, else
    :func:`detected_isa`."""
    best = detected_isa()
    forced = os.environ.get("HELI_CPU_ISA", "").strip().lower()
    if not forced:
        return best
    if forced not in ISAS:
        raise TargetError(
            f"HELI_CPU_ISA={forced!r} is not a cpu ISA level; choose from {list(ISAS)!r}.")
    if ISAS.index(forced) > ISAS.index(best):
        raise UnsupportedError(
            f"HELI_CPU_ISA={forced!r} asks for code this host cannot run: its best level "
            f"is {best!r}.")
    return forced


def can_run(isa: str) -> bool:
    """Whether this host can build and run code of ISA level ``isa``."""
    return ISAS.index(isa) <= ISAS.index(detected_isa())


# ----------------------------------------------------------------- building

def cache_key(source: str, flags: list[str]) -> str:
    digest = hashlib.sha256()
    for part in (_FORMAT, compiler_identity(), "\0".join(flags), source):
        digest.update(part.encode())
        digest.update(b"\0\0")
    return digest.hexdigest()[:32]


def _remove_stale_builds(folder: Path, age_s: float = 3600.0) -> None:
    """Delete build folders left by killed processes (none is this old)."""
    now = time.time()
    for entry in folder.glob(".build-*"):
        try:
            if now - entry.stat().st_mtime > age_s:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def build_library(source: str, *, isa: str | None = None, extra_flags: tuple[str, ...] = (),
                  name: str = "kernel") -> Path:
    """Compile C ``source`` into a shared library in the cache (once per key)
    and return its path.  ``name`` only makes the file easier to recognise."""
    flags = build_flags(isa, tuple(extra_flags))
    key = cache_key(source, flags)
    folder = cache_dir()
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:40] or "kernel"
    target = folder / f"{safe}-{key}.so"
    if target.is_file():
        return target
    _remove_stale_builds(folder)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=folder) as tmp:
        src = Path(tmp) / f"{safe}.c"
        out = Path(tmp) / f"{safe}.so"
        src.write_text(source)
        command = [*compiler(), *flags, str(src), "-o", str(out), "-lm"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TargetError(f"Running the C compiler failed: {exc}.") from exc
        if result.returncode != 0 or not out.is_file():
            message = (result.stderr or result.stdout).strip()
            raise TargetError(
                f"The C compiler failed on kernel {name!r} (exit code {result.returncode}): "
                f"{shlex.join(command)}\n{message[-4000:]}")
        # Keep the source next to the library for debugging, then publish
        # the library itself last: its presence means the build is complete.
        os.replace(src, folder / f"{safe}-{key}.c")
        os.replace(out, target)
    return target


# ------------------------------------------------------------------ loading

def asan_runtime() -> Path:
    """Path of the compiler's AddressSanitizer runtime, for ``LD_PRELOAD``."""
    result = subprocess.run([*compiler(), "-print-file-name=libasan.so"],
                            capture_output=True, text=True, timeout=60)
    path = result.stdout.strip()
    if result.returncode != 0 or not os.path.isabs(path) or not os.path.exists(path):
        raise TargetError(
            f"The C compiler {compiler()[0]!r} has no AddressSanitizer runtime "
            "(libasan.so); install it (e.g. the libasan package) or unset HELI_CPU_ASAN.")
    return Path(path)


def _asan_loaded() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "__asan_init")
    except OSError:
        return False


KERNELS_DIR = Path(__file__).with_name("kernels")
_runtime: ctypes.CDLL | None = None


def pool_header() -> str:
    """The declarations of the thread pool's API (``kernels/threadpool.h``),
    for sources that call it."""
    return (KERNELS_DIR / "threadpool.h").read_text()


def runtime() -> ctypes.CDLL:
    """The thread pool library (``kernels/threadpool.c``), built and loaded
    with ``RTLD_GLOBAL`` once per process, before any kernel library: kernel
    libraries leave ``heli_parallel`` undefined and the dynamic linker binds
    it to this one, so the SGEMM and every model share one pool."""
    global _runtime
    with _lock:
        if _runtime is not None:
            return _runtime
    path = build_library((KERNELS_DIR / "threadpool.c").read_text(), isa="portable",
                         name="heli-threadpool")
    with _lock:
        if _runtime is None:
            _check_asan()
            try:
                _runtime = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                raise TargetError(
                    f"Could not load Heli's thread pool library {str(path)!r}: {exc}.") from exc
            _runtime.heli_pool_stats.argtypes = [ctypes.POINTER(ctypes.c_long)]
            _runtime.heli_pool_stats.restype = None
        return _runtime


def pool_stats() -> dict[str, int]:
    """The thread pool's counters: workers started, jobs run on the pool,
    tasks run by workers (not by the calling thread)."""
    out = (ctypes.c_long * 3)()
    runtime().heli_pool_stats(out)
    return {"workers": out[0], "jobs": out[1], "worker_tasks": out[2]}


def _check_asan() -> None:
    if asan_enabled() and not _asan_loaded():
        # An instrumented library loaded without the runtime first would
        # abort the whole process, so refuse instead.
        try:
            hint = str(asan_runtime())
        except TargetError:
            hint = "$(cc -print-file-name=libasan.so)"
        raise TargetError(
            "HELI_CPU_ASAN=1 builds kernels with AddressSanitizer, whose runtime must be "
            f"loaded first: run Python as LD_PRELOAD={hint} "
            f"ASAN_OPTIONS=detect_leaks=0 {os.path.basename(sys.executable)} ...")


def load_library(path: Path) -> ctypes.CDLL:
    """ctypes handle of a compiled library (one per path and process); the
    thread pool (:func:`runtime`) is loaded first."""
    path = Path(path)
    with _lock:
        lib = _loaded.get(path)
        if lib is not None:
            return lib
    _check_asan()
    runtime()
    with _lock:
        lib = _loaded.get(path)
        if lib is not None:
            return lib
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise TargetError(f"Could not load the compiled kernel {str(path)!r}: {exc}.") from exc
        _loaded[path] = lib
        return lib


def compile_library(source: str, *, isa: str | None = None, extra_flags: tuple[str, ...] = (),
                    name: str = "kernel") -> ctypes.CDLL:
    """Compile (or find in the cache) and load C ``source`` for ISA level
    ``isa`` (default :func:`host_isa`)."""
    if isa is not None and not can_run(isa):
        raise UnsupportedError(
            f"This host cannot run {isa!r} code: its best ISA level is {detected_isa()!r}.")
    return load_library(build_library(source, isa=isa, extra_flags=extra_flags, name=name))
