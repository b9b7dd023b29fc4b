"""Replay a month's real rides through the served model, at a bounded rate and concurrency.

Each ride goes with its `ride_id` (`duration.data.prepare.ride_ids`), so that what was
served can be joined to the ride's real duration later (`duration monitor --served`). The
rides are the prepared month's, in order, as the TLC published them (raw column names).
It only ever talks to the local proxy (127.0.0.1:SERVE_PORT), and stops at `rides`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import requests

from duration.core.records import raw_records
from duration.data import prepare
from duration.errors import DurationError
from duration.infra.net import is_healthy
from duration.ops.requests import TrafficRequest
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
    failed_requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    versions: dict[str, int] = field(default_factory=dict)  # rides answered, by version
    errors: list[str] = field(default_factory=list)  # the first few, one line each


def bodies(settings: Settings, req: TrafficRequest) -> list[tuple[bytes, int]]:
    """The JSON bodies of the replay, and how many rides each holds."""
    rides = prepare.load_processed(settings, req.color, req.month)
    if len(rides) < req.rides:
        raise DurationError(
            f"{req.color.value} {req.month} has {len(rides)} prepared rides, fewer than "
            f"--rides {req.rides}: ask for fewer"
        )
    rides = rides.head(req.rides).drop(columns=["duration", "dropoff_datetime"], errors="ignore")
    split = json.loads(raw_records(rides, req.color).to_json(orient="split", date_format="iso"))
    columns = [*split["columns"], "ride_id"]
    ids = prepare.ride_ids(req.color, req.month, np.arange(req.rides))
    rows = [[*row, ride_id] for row, ride_id in zip(split["data"], ids, strict=True)]
    out = []
    for a in range(0, len(rows), req.batch):
        part = rows[a : a + req.batch]
        body = {"dataframe_split": {"columns": columns, "data": part}}
        out.append((json.dumps(body).encode(), len(part)))
    return out


def _first_line(r: requests.Response) -> str:
    try:
        message = r.json().get("message", r.text)
    except ValueError:
        message = r.text
    return f"HTTP {r.status_code}: {' '.join(str(message).split())[:160]}"


def replay(settings: Settings, req: TrafficRequest, stop: threading.Event | None = None) -> Traffic:
    """Send the rides of `req` to the proxy; return what came back."""
    req.check(settings.serve.max_rides)
    url = settings.serve.url
    if not is_healthy(url):
        raise DurationError(f"nothing serves at {url}: run `make serve` (or `duration deploy`)")
    work = bodies(settings, req)
    stop = stop or threading.Event()
    lock = threading.Lock()
    counter = itertools.count()
    latencies: list[float] = []
    versions: Counter[str] = Counter()
    errors: list[str] = []
    failed = 0
    start = time.perf_counter()

    def client() -> None:
        nonlocal failed
        with requests.Session() as session:
            while not stop.is_set():
                with lock:
                    i = next(counter)
                if i >= len(work):
                    return
                body, n = work[i]
                time.sleep(max(0.0, start + i / req.rate - time.perf_counter()))
                t0 = time.perf_counter()
                try:
                    r = session.post(f"{url}/invocations", data=body, timeout=30,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
                    ok, problem = r.status_code == 200, _first_line(r)
                except requests.RequestException as e:
                    ok, problem = False, " ".join(str(e).split())[:160]
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    if ok:
                        latencies.append(ms)
                        versions[r.headers.get("X-Model-Version", "?")] += n
                    else:
                        failed += 1
                        if len(errors) < 5:
                            errors.append(problem)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(req.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    done = len(latencies) + failed
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (np.nan, np.nan)
    return Traffic(
        url=url, month=req.month, color=req.color.value, rides=sum(n for _, n in work[:done]),
        requests=done, answered_rides=sum(versions.values()), failed_requests=failed,
        seconds=round(seconds, 3), requests_per_s=round(done / seconds, 1) if seconds else 0.0,
        p50_ms=round(float(p50), 2), p99_ms=round(float(p99), 2), versions=dict(versions),
        errors=errors,
    )  # fmt: skip
