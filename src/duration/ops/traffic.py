"""Replay a month's real rides through the served model, at a bounded rate and concurrency.

Each ride goes with its `ride_id` (`duration.core.rides`), so that what was
served can be joined to the ride's real duration later (`duration monitor --served`). The
rides are the prepared month's, in order, as the TLC published them (raw column names).
It only ever talks to the local proxy (127.0.0.1:SERVE_PORT), and stops at `rides`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import requests

from duration.core.records import raw_records
from duration.core.rides import ride_ids
from duration.data import prepare
from duration.errors import DurationError
from duration.infra.net import is_healthy, said
from duration.ops.specs import TrafficRequest
from duration.serving import client, service
from duration.settings import Settings


@dataclass(kw_only=True)
class Traffic:
    """What a replay sent and got back."""

    url: str
    month: str
    color: str
    rides: int
    requests: int
    answered_rides: int
    failed_requests: int  # no answer, or the service's error (5xx)
    refused_requests: int = 0  # answered 4xx: rides the served model does not take
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    versions: dict[str, int] = field(default_factory=dict)  # rides answered, by version
    arms: dict[str, int] = field(default_factory=dict)  # rides answered, by arm
    errors: list[str] = field(default_factory=list)  # the first few, one line each
    logged: bool = True  # every answered ride was in the prediction log when it returned


@dataclass(frozen=True, kw_only=True)
class Body:
    """One request of the replay: its JSON, how many rides it holds, and its first ride's
    id (sent as X-Ride-Id: the key a canary split keeps each ride to one arm by)."""

    data: bytes
    rides: int
    key: str


def bodies(settings: Settings, req: TrafficRequest) -> list[Body]:
    """The requests of the replay, in order."""
    rides = prepare.load_processed(settings, req.color, req.month)
    if len(rides) < req.rides:
        raise DurationError(
            f"{req.color.value} {req.month} has {len(rides)} prepared rides, fewer than "
            f"--rides {req.rides}: ask for fewer"
        )
    rides = rides.head(req.rides).drop(columns=["duration", "dropoff_datetime"], errors="ignore")
    columns, rows = client.split(raw_records(rides, req.color))
    ids = ride_ids(req.color, req.month, np.arange(req.rides))
    rows = [[*row, ride_id] for row, ride_id in zip(rows, ids, strict=True)]
    out = []
    for a in range(0, len(rows), req.batch):
        part = rows[a : a + req.batch]
        out.append(
            Body(data=client.body([*columns, "ride_id"], part), rides=len(part), key=part[0][-1])
        )
    return out


def _first_line(r: requests.Response) -> str:
    return f"HTTP {r.status_code}: {said(r, 160)}"


class _Replay:
    """The replay's shared state: the next request to send, and what came back."""

    def __init__(self, url: str, work: list[Body], rate: float, stop: threading.Event) -> None:
        self.url, self.work, self.rate, self.stop = url, work, rate, stop
        self.lock, self.counter = threading.Lock(), itertools.count()
        self.latencies: list[float] = []
        self.versions: Counter[str] = Counter()
        self.arms: Counter[str] = Counter()
        self.errors: list[str] = []
        self.failed = 0
        self.refused = 0
        self.start = time.perf_counter()

    def client(self) -> None:
        """One client: keep-alive, each request at its turn (i / rate after the start)."""
        with requests.Session() as session:
            while not self.stop.is_set():
                with self.lock:
                    i = next(self.counter)
                if i >= len(self.work):
                    return
                body = self.work[i]
                time.sleep(max(0.0, self.start + i / self.rate - time.perf_counter()))
                t0 = time.perf_counter()
                headers = {"Content-Type": "application/json", "X-Ride-Id": body.key}
                url = f"{self.url}/invocations"
                r: requests.Response | None = None
                try:
                    r = session.post(url, data=body.data, timeout=30, headers=headers)
                    problem = _first_line(r)
                except requests.RequestException as e:
                    problem = " ".join(str(e).split())[:160]
                self._count(r, problem, (time.perf_counter() - t0) * 1000, body.rides)

    def _count(self, r: requests.Response | None, problem: str, ms: float, n: int) -> None:
        """An answer (200), a refusal of its rides (4xx), or a failure (no answer, 5xx)."""
        with self.lock:
            if r is not None and r.status_code == 200:
                self.latencies.append(ms)
                self.versions[r.headers.get("X-Model-Version", "?")] += n
                self.arms[r.headers.get("X-Model-Arm", "?")] += n
                return
            if r is not None and 400 <= r.status_code < 500:
                self.refused += 1
            else:
                self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(problem)


def replay(settings: Settings, req: TrafficRequest, stop: threading.Event | None = None) -> Traffic:
    """Send the rides of `req` to the proxy; return what came back."""
    req.check(settings.serve.max_rides)
    url = settings.serve.url
    if not is_healthy(url):
        raise DurationError(f"nothing serves at {url}: run `make serve` (or `duration deploy`)")
    run = _Replay(url, bodies(settings, req), req.rate, stop or threading.Event())
    threads = [threading.Thread(target=run.client, daemon=True) for _ in range(req.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - run.start
    done = len(run.latencies) + run.failed + run.refused
    # what was served is in the log before it returns: a report run next sees all of it
    logged = service.wait_for_log(settings, time.time(), 3 * settings.serve.flush_s + 5)
    p50, p99 = np.percentile(run.latencies, [50, 99]) if run.latencies else (np.nan, np.nan)
    return Traffic(
        url=url,
        month=req.month,
        color=req.color.value,
        rides=sum(w.rides for w in run.work[:done]),
        requests=done,
        answered_rides=sum(run.versions.values()),
        failed_requests=run.failed,
        refused_requests=run.refused,
        seconds=round(seconds, 3),
        requests_per_s=round(done / seconds, 1) if seconds else 0.0,
        p50_ms=round(float(p50), 2),
        p99_ms=round(float(p99), 2),
        versions=dict(run.versions),
        arms=dict(run.arms),
        errors=run.errors,
        logged=logged,
    )
