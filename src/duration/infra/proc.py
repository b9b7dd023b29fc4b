"""Processes: is one alive, stop a whole process group, find a child."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time

import psutil


def alive(pid: int, needle: str = "") -> bool:
    """True when `pid` runs (not a zombie) and its command line contains `needle`: a pid
    that was reused by another program does not count."""
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and needle in " ".join(p.cmdline())
    except (psutil.Error, ValueError):
        return False


def group_alive(pgid: int) -> bool:
    """True while a process of group `pgid` runs (zombies, dead but not yet reaped by a
    parent that is gone or busy, do not count)."""
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


def stop_group(pgid: int, timeout: float = 15.0) -> None:
    """Stop a process group (a server and the workers it started): SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pgid, os.WNOHANG)
            if not group_alive(pgid):
                return
            time.sleep(0.1)


def gone(host: str, pid: str, since_ms: int) -> bool:
    """True when the process `pid` that started on this `host` by `since_ms` (epoch ms) no
    longer runs; False for another host's process, which cannot be checked from here."""
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        started = psutil.Process(int(pid)).create_time()
    except psutil.NoSuchProcess:
        return True
    return started * 1000 > since_ms + 1000  # the pid now belongs to a newer process


def child_with(pid: int, needle: str) -> int:
    """The first process under `pid` whose command line contains `needle` (else `pid`)."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            if needle in " ".join(child.cmdline()):
                return int(child.pid)
    return pid
