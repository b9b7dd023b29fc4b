"""Atomic file writes (a file appears whole under its name, or not at all) and lock files."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from duration.errors import DurationError, cause


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
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


@contextmanager
def exclusive(path: Path, wait: float, busy: str) -> Iterator[bool]:
    """Hold the lock file `path`, one process at a time; yield True if another holder made
    this one wait. After `wait` seconds, refuse with the one-line `busy`."""
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


def write_atomic(dest: Path, text: str, mode: int | None = None) -> Path:
    """Write `text` to `dest` atomically; with `mode` (0o600 for a secret), the file has it
    from its first byte."""
    with atomic_path(dest) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    return dest


def tail(log: Path) -> str:
    """The cause of a failure, as a process's log file reports it."""
    try:
        return cause(log.read_text(errors="replace"))
    except OSError:
        return "no log"
