"""Faults on purpose, for the tests and `benchmarks/faults.py`: a bounded CPU hog, and a
worker killed with -9 under a replay of real rides, measured (what was answered, logged,
lost, broken). Everything stays on loopback and ends by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from duration.core.rides import ride_ids
from duration.infra.proc import stop_group
from duration.ops import traffic
from duration.ops.specs import TrafficRequest
from duration.serving import log_read, service
from duration.settings import Settings

HOG = "while True: pass"


@contextmanager
def cpu_hog(seconds: float, cores: int = 2) -> Iterator[None]:
    """`cores` processes that keep a core busy each, under `timeout` (at most `seconds`),
    stopped when the block ends."""
    hogs = [
        subprocess.Popen(
            ["timeout", f"{seconds:g}", "python3", "-c", HOG],
            start_new_session=True,  # `timeout` and its hog, stopped as one group
        )
        for _ in range(cores)
    ]
    try:
        yield
    finally:
        for h in hogs:
            stop_group(h.pid, timeout=5)


@dataclass(frozen=True, kw_only=True)
class KillTry:
    """One try: a worker killed with -9 while a replay runs, and what came of it."""

    rides: int
    answered: int  # rides answered 200
    logged: int  # those found in the log, once each
    lost: int  # answered, not in the log
    twice: int  # rides logged more than once (after the log's own dedup)
    broken: int  # requests that got no whole answer (failed, not refused)
    killed: int  # the pid killed


def _workers(s: Settings, n: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(found := service.status(s).workers) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"{n} workers did not come back within {timeout:g} s")
        time.sleep(0.2)
    return found


def kill_try(s: Settings, month: str, rides: int = 5000, rate: float = 500.0) -> KillTry:
    """Replay `rides` of `month` at `rate`; kill one worker with -9 a third of the way in;
    then find each answered ride in the log's rows of the replay's time."""
    workers = _workers(s, s.serve.workers, 120)
    since = pd.Timestamp.now(tz="UTC")  # the workers stamp each ride when they answer it
    out: dict[str, traffic.Traffic] = {}
    req = TrafficRequest(month=month, rides=rides, rate=rate, concurrency=8)
    t = threading.Thread(target=lambda: out.update(result=traffic.replay(s, req)), daemon=True)
    t.start()
    time.sleep(rides / rate / 3)
    os.kill(workers[0], signal.SIGKILL)
    t.join(timeout=rides / rate * 10 + 60)
    result = out["result"]
    _workers(s, s.serve.workers, 120)  # its supervisor started another
    log = log_read.read(s.paths.serve_log).table.to_pandas()
    mine = log[(log["served_at"] >= since) & log["ride_id"].notna()]
    counts = mine["ride_id"].value_counts()
    sent = ride_ids(req.color, month, np.arange(rides))
    found = counts.reindex(sent, fill_value=0)
    return KillTry(
        rides=rides,
        answered=result.answered_rides,
        logged=int((found > 0).sum()),
        lost=int(result.answered_rides - (found > 0).sum()),
        twice=int((found > 1).sum()),
        broken=result.failed_requests,
        killed=workers[0],
    )
