"""One exclusive, advisory file lock shared by Heli's caches (test models,
the area estimate's syntheses, the co-simulation's Verilator builds), so that
parallel processes build a cached thing once while the others wait."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with``
    block. Without ``fcntl`` (not POSIX) there is no lock: at worst two
    processes then build the same cached thing twice."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
