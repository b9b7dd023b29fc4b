"""Serving metrics in Prometheus's text format, one target per worker group.

Each worker of a group counts into the group's own folder (prometheus-client's multiprocess
mode: `PROMETHEUS_MULTIPROC_DIR`, set by `duration.serving.workers.start_group`, which
empties it first). Any worker answers `GET /metrics` with the sum over the group's workers,
the dead ones' counts included, so a worker restarted by its supervisor loses no count.
Clients of the serving port never see it: nginx answers 404 there (`duration.serving.proxy`);
Prometheus scrapes each group's loopback port. `DURATION_SERVE_METRICS=false` turns it off.

The names are a contract (alert rules and scripts read them):
- `duration_serving_requests_total{arm,version,status}`: requests answered, by HTTP status;
- `duration_serving_rides_total{arm,version}`: rides answered with a prediction;
- `duration_serving_request_seconds{arm}`: a histogram of the time to answer;
- `duration_prediction_log_rows_total{outcome}`: rides written to the prediction log
  (`written`) or answered but never written (`not_written`: the disk refused, the wait full);
- `duration_prediction_log_pending_rows`: rides answered and waiting in memory for the disk.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from duration.infra.proc import alive as running

DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PID = re.compile(r"_(\d+)\.db$")


class Meter:
    """One worker's counts, for its arm and version (into the group's folder)."""

    def __init__(self, folder: Path, arm: str, version: str) -> None:
        self.folder, self.arm, self.version = folder, arm, version
        # registry=None: the counts live in the folder's files, not in a process registry
        self._requests = Counter(
            "duration_serving_requests",
            "Requests answered, by arm, version and HTTP status",
            ["arm", "version", "status"],
            registry=None,
        )
        self._rides = Counter(
            "duration_serving_rides",
            "Rides answered with a prediction, by arm and version",
            ["arm", "version"],
            registry=None,
        )
        self._seconds = Histogram(
            "duration_serving_request_seconds",
            "Time to answer a request, by arm",
            ["arm"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self._rows = Counter(
            "duration_prediction_log_rows",
            "Answered rides written to the prediction log, or never written",
            ["outcome"],
            registry=None,
        )
        self._pending = Gauge(
            "duration_prediction_log_pending_rows",
            "Answered rides waiting in memory for the disk",
            registry=None,
            multiprocess_mode="livesum",
        )
        # each labelled series made once (labels() takes a lock and a lookup per call)
        self._by_status: dict[int, Any] = {}
        self._ride_count = self._rides.labels(arm=arm, version=version)
        self._latency = self._seconds.labels(arm=arm)
        self._written = self._rows.labels(outcome="written")  # both exist from the start, at 0
        self._not_written = self._rows.labels(outcome="not_written")
        self._pending.set(0)
        self._last_pending = 0

    def request(self, status: int, rides: int, seconds: float) -> None:
        """One answered request: its status, its rides predicted (0 unless 200), its time."""
        if (child := self._by_status.get(status)) is None:  # labels() once a status
            labels = {"arm": self.arm, "version": self.version, "status": str(status)}
            child = self._by_status[status] = self._requests.labels(**labels)
        child.inc()
        if rides:
            self._ride_count.inc(rides)
        self._latency.observe(seconds)

    def logged(self, written: int = 0, not_written: int = 0, pending: int | None = None) -> None:
        """Rides the prediction log wrote or gave up on; how many wait for the disk."""
        if written:
            self._written.inc(written)
        if not_written:
            self._not_written.inc(not_written)
        if pending is not None and pending != self._last_pending:
            self._pending.set(pending)
            self._last_pending = pending

    def exposition(self) -> bytes:
        """The group's metrics, summed over its workers, in Prometheus's text format."""
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.folder))  # type: ignore[no-untyped-call]
        return bytes(generate_latest(registry))


def forget_dead(folder: Path, alive: set[int] | None = None) -> list[int]:
    """Drop the live gauges of workers that are gone (their counters stay: a sum over the
    group never goes down); the pids forgotten."""
    gone = []
    for path in folder.glob("*.db"):
        m = _PID.search(path.name)
        if m is None:
            continue
        pid = int(m.group(1))
        if pid not in gone and not (pid in alive if alive is not None else running(pid)):
            multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]
            gone.append(pid)
    return gone


def meter_from_env(arm: str, version: str) -> Meter | None:
    """This worker's meter when its group counts (the folder in `DIR_ENV`), else None."""
    folder = os.environ.get(DIR_ENV)
    if not folder:
        return None
    forget_dead(Path(folder))
    return Meter(Path(folder), arm, version)
