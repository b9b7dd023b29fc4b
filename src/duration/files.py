"""Atomic file writes (a file appears whole under its name, or not at all) and lock files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; it replaces `dest` only if the block succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def utc_stamp() -> str:
    """Now, in UTC, as a file name part that sorts in time order (20261130T021500Z)."""
    import time

    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


@contextmanager
def exclusive(path: Path, wait: float, busy: str) -> Iterator[bool]:
    """Hold the lock file `path`, one process at a time; yield True if another holder made
    this one wait. After `wait` seconds, refuse with the one-line `busy`."""
    from filelock import FileLock, Timeout

    from duration.errors import DurationError

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
        waited = False
    except Timeout:
        try:
            lock.acquire(timeout=wait)
        except Timeout as e:
            raise DurationError(busy) from e
        waited = True
    try:
        yield waited
    finally:
        lock.release()
