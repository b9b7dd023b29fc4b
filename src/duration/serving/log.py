"""The prediction log: one row per served ride (`ServedRide`), written before its answer.

Each scoring worker appends every answered request, as one `ServedRequest` JSON line, to a
segment file of its own with one unbuffered `write`, before the client has the answer:
once that call returns, the kernel holds the line, so a worker killed with -9 loses no
answered ride (a machine crash can lose what the kernel had not yet put on disk; readers
skip a torn last line). A thread in each worker rotates its segment every `flush_s`
seconds, turns the finished segment into a parquet file (atomically: a file is complete
or absent), merges its parquet files COMPACT_PARTS at a time, and turns the segments of
workers that died into parquet too. A ride's key is (request_id, arm, position): a request
retried on another worker is logged twice and read once (`duration.serving.log_read`).

When the disk is full the requests wait in memory (up to `max_pending` rides, then newer
ones are dropped and counted), serving goes on, the serving log says so once, and writing
resumes, oldest first, when space returns. Each worker's counters are in a small JSON file
beside (not under) the log.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, NewType, get_type_hints

import pyarrow as pa
import pyarrow.parquet as pq

from duration.core.records import INPUTS
from duration.infra.files import atomic_path, utc_stamp, write_atomic
from duration.serving.metrics import Meter

EpochMs = NewType("EpochMs", int)  # a time as milliseconds since the epoch, UTC


class ServedRide(NamedTuple):
    """One served ride, as the log records it: the log's schema, written once."""

    request_id: str  # nginx's X-Request-Id; a shadow's rows carry the primary's
    ride_id: str | None  # the client's, when it sent one
    served_at: EpochMs
    model_name: str
    model_version: str
    arm: str  # production, canary or shadow
    weight: int | None  # a canary's share of clients (%), 100 for a shadow, None: Production
    latency_ms: float
    pickup_datetime: str | None  # the ride's inputs, as the client sent them
    PULocationID: int | None
    DOLocationID: int | None
    trip_distance: float | None
    VendorID: float | None
    RatecodeID: float | None
    trip_type: float | None
    passenger_count: float | None
    prediction: float | None
    position: int | None  # the ride's place in its request (None in files before it)


_ARROW: dict[object, pa.DataType] = {str: pa.string(), int: pa.int64(), float: pa.float64()}


def _arrow(kind: object) -> pa.DataType:
    """A field's arrow type, from its annotation (`X | None` is a nullable X)."""
    if kind is EpochMs:
        return pa.timestamp("ms", tz="UTC")
    base = next(a for a in getattr(kind, "__args__", (kind,)) if a is not type(None))
    return _ARROW[base]


SCHEMA = pa.schema([(n, _arrow(t)) for n, t in get_type_hints(ServedRide).items()])
FIELDS = ServedRide._fields
LOGGED_INPUTS = FIELDS[FIELDS.index("latency_ms") + 1 : FIELDS.index("prediction")]
assert LOGGED_INPUTS == INPUTS, "the log records exactly the ride's inputs (core.records)"
KEY = ["request_id", "arm", "position"]  # one served ride
COMPACT_PARTS = 300  # a worker merges its files 300 at a time (5 minutes at 1 s flushes)
SEGMENT = "seg-"  # a worker's segment: seg-PID-HEX-SEQ.jsonl, one request a line


@dataclass(frozen=True, kw_only=True)
class ServedRequest:
    """One answered request, as a segment line: what its rides share, then their columns
    (`inputs` by canonical name, in the order of `ride_ids`)."""

    request_id: str
    served_at: EpochMs
    model_name: str
    model_version: str
    arm: str
    weight: int | None
    latency_ms: float
    ride_ids: list[str | None]
    inputs: dict[str, list[Any]]
    predictions: list[float | None]

    def line(self) -> bytes:
        return (json.dumps(asdict(self)) + "\n").encode()

    @property
    def rides(self) -> int:
        return len(self.ride_ids)

    def columns(self) -> dict[str, list[Any]]:
        """Its rides as the log's columns (SCHEMA's names)."""
        n, shared = self.rides, asdict(self)
        out = {f: [shared[f]] * n for f in ("request_id", "served_at", "model_name")}
        out |= {f: [shared[f]] * n for f in ("model_version", "arm", "weight", "latency_ms")}
        out |= {"ride_id": self.ride_ids, "prediction": self.predictions}
        out |= {c: self.inputs.get(c) or [None] * n for c in LOGGED_INPUTS}
        return out | {"position": list(range(n))}


def table_of(requests: list[ServedRequest]) -> pa.Table:
    """Requests as one table of SCHEMA: a column at once, value by value only where a
    client sent something odd (a string zone, a number as a time)."""
    columns: dict[str, list[Any]] = {name: [] for name in FIELDS}
    for r in requests:
        for name, values in r.columns().items():
            columns[name].extend(values)
    arrays = []
    for f in SCHEMA:
        try:
            arrays.append(pa.array(columns[f.name], type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays.append(pa.array(_loggable(f.type, columns[f.name]), type=f.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def _loggable(kind: pa.DataType, values: list[Any]) -> list[object]:
    """A column's values as the log's type takes them (what does not fit becomes null)."""
    if kind == pa.string():
        return [None if v is None else str(v) for v in values]
    if kind == pa.int64():
        return [v if type(v) is int else None for v in values]
    return [float(v) if type(v) in (int, float) else None for v in values]


def parse_segment(data: bytes) -> tuple[list[ServedRequest], int]:
    """A segment's requests, and how many bytes at its end were not a whole line (a line
    cut by a crash, or one being written)."""
    end = data.rfind(b"\n") + 1
    out = []
    for line in data[:end].splitlines():
        with contextlib.suppress(ValueError, TypeError):
            out.append(ServedRequest(**json.loads(line)))
    return out, len(data) - end


@dataclass(kw_only=True)
class Counters:
    """A worker's log, counted: what it answered, wrote, holds, dropped and refused."""

    pid: int
    model_name: str
    model_version: str
    arm: str
    answered_requests: int = 0
    failed_requests: int = 0  # MLflow's errors, a shadow's overflow: never logged
    refused_requests: int = 0  # rides that broke a rule (400): never logged as served
    refused_rides: int = 0
    logged_rides: int = 0  # in the log's files
    pending_rides: int = 0  # answered, waiting in memory for the disk
    dropped_rides: int = 0  # answered while that wait was full: never logged
    unscored_copies: int = 0  # a shadow's: copies of requests acknowledged, not yet scored
    files: int = 0  # parquet files this worker wrote
    writing: bool = True  # False while the disk refuses
    error: str = ""
    updated_at: float = field(default_factory=time.time)


class PredictionLog:
    """One worker's segment, its wait in memory and its compaction thread (`start`,
    `add`, `failed`, `refused`, `close`)."""

    def __init__(
        self,
        folder: Path,
        status: Path,
        counters: Counters,
        flush_s: float = 1.0,
        max_pending: int = 200_000,
        alive: Callable[[int], bool] | None = None,
        meter: Meter | None = None,
    ) -> None:
        self.folder, self.status, self.counters = folder, status, counters
        self.meter = meter  # the group's Prometheus counts, when they are on
        self.flush_s, self.max_pending = flush_s, max_pending
        self.alive = alive or (lambda pid: True)
        self.token = f"{os.getpid()}-{secrets.token_hex(3)}"  # this worker's, in file names
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._seq = 0
        self._fd: int | None = None
        self._segment: Path | None = None
        self._size = 0  # bytes in the open segment
        self._waiting: list[ServedRequest] = []  # answered, not yet written (a full disk)
        self._parts: list[Path] = []  # parquet files written since the last merge

    def start(self) -> PredictionLog:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def add(self, request: ServedRequest) -> None:
        """Append one answered request to the segment; never raises: when the disk refuses,
        it waits in memory (or, past `max_pending`, is dropped and counted)."""
        with self._lock:
            self.counters.answered_requests += 1
            if not self._waiting and self._append(request.line()):
                self.counters.logged_rides += request.rides
                self._metered(written=request.rides)
                return
            if self.counters.pending_rides + request.rides > self.max_pending:
                self.counters.dropped_rides += request.rides
                self._metered(not_written=request.rides)
                return
            self._waiting.append(request)
            self.counters.pending_rides += request.rides
            self._metered()

    def _metered(self, written: int = 0, not_written: int = 0) -> None:
        """The same counts, for Prometheus (under the lock)."""
        if self.meter is not None:
            pending = self.counters.pending_rides
            self.meter.logged(written=written, not_written=not_written, pending=pending)

    def failed(self) -> None:
        """Count a request that got no prediction."""
        with self._lock:
            self.counters.failed_requests += 1

    def refused(self, rides: int) -> None:
        """Count a request refused for its rides (none of them served)."""
        with self._lock:
            self.counters.refused_requests += 1
            self.counters.refused_rides += rides

    def _open(self) -> int:
        if self._fd is None:
            self._seq += 1
            self._segment = self.folder / f"{SEGMENT}{self.token}-{self._seq:06d}.jsonl"
            self._fd = os.open(self._segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._size = 0
        return self._fd

    def _append(self, line: bytes) -> bool:
        """One write of a whole line (a partial one is cut back); False if the disk refused."""
        try:
            fd = self._open()
            written = os.write(fd, line)
        except OSError as e:
            self._failing(e)
            return False
        if written == len(line):
            self._size += written
            return True
        with contextlib.suppress(OSError):
            os.ftruncate(fd, self._size)  # a torn line would hide the ones after it
        self._failing(OSError(28, "No space left on device"))
        return False

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def flush(self) -> None:
        """Write what waits, rotate the segment into parquet, merge, take in the segments
        of dead workers, and report the counters."""
        with self._lock:
            self._retry()
            done, self._segment, fd = self._segment, None, self._fd
            self._fd = None
        if fd is not None:
            os.close(fd)
        if done is not None:
            self._to_parquet(done)
        self._segments()
        self._report()

    def _retry(self) -> None:
        """Append what waited, oldest first, while the disk takes it (under the lock)."""
        while self._waiting and self._append(self._waiting[0].line()):
            r = self._waiting.pop(0)
            self.counters.pending_rides -= r.rides
            self.counters.logged_rides += r.rides
            self._metered(written=r.rides)
        if not self._waiting and not self.counters.writing:
            self.counters.writing, self.counters.error = True, ""
            print(f"duration: prediction log: writing to {self.folder} again", file=sys.stderr)

    def _to_parquet(self, segment: Path) -> None:
        """A finished segment as a parquet file, then gone (kept while the disk is full, or
        if another worker took it first)."""
        try:
            requests, _ = parse_segment(segment.read_bytes())
        except OSError:
            return
        token = "-".join(segment.stem.removeprefix(SEGMENT).split("-")[:2])
        if not requests:
            segment.unlink(missing_ok=True)
            return
        path = self.folder / f"{utc_stamp()}-{token}-{_seq(segment)}.parquet"
        try:
            with atomic_path(path) as tmp:
                pq.write_table(table_of(requests), tmp)
        except OSError:
            return  # no room: the segment stays, is read as it is, and is tried again
        segment.unlink(missing_ok=True)
        if token == self.token:
            self.counters.files += 1
            self._parts.append(path)
            if len(self._parts) >= COMPACT_PARTS:
                self._merge()

    def _segments(self) -> None:
        """Finished segments into parquet: this worker's that a full disk held back, and
        those of workers killed before they could rotate theirs."""
        for segment in sorted(self.folder.glob(f"{SEGMENT}*.jsonl")):
            pid = segment.name.removeprefix(SEGMENT).split("-", 1)[0]
            if segment == self._segment or not pid.isdigit():
                continue
            if int(pid) == os.getpid() or not self.alive(int(pid)):
                self._to_parquet(segment)

    def _merge(self) -> None:
        """Merge this worker's last COMPACT_PARTS files into one (atomically), then remove
        them. The merged file's name says which it holds: readers skip any left behind."""
        parts, first, last = self._parts, self._parts[0], self._parts[-1]
        stamp = first.name.split("-", 1)[0]
        merged = self.folder / f"{stamp}-{self.token}-{_seq(first)}-{_seq(last)}.parquet"
        try:
            with atomic_path(merged) as tmp:
                tables = (pq.read_table(p, schema=SCHEMA) for p in parts)
                pq.write_table(pa.concat_tables(tables), tmp)
        except OSError:
            return  # no room to merge: the parts stay as they are, and it tries again later
        for p in parts:
            p.unlink(missing_ok=True)
        self._parts = []

    def _failing(self, e: OSError) -> None:
        if self.counters.writing:  # said once, not on every request
            print(
                f"duration: prediction log: cannot write to {self.folder} ({e.strerror or e}); "
                "serving goes on, the rides wait in memory, and writing resumes when space "
                "returns",
                file=sys.stderr,
                flush=True,
            )
        self.counters.writing, self.counters.error = False, str(e.strerror or e)

    def _report(self) -> None:
        """This worker's counters, beside the log (where a full log disk does not reach)."""
        with self._lock:
            self.counters.updated_at = time.time()
            text = json.dumps(asdict(self.counters))
        with contextlib.suppress(OSError):
            write_atomic(self.status / f"{os.getpid()}.json", text)

    def close(self) -> None:
        """Stop the thread and turn what is left into parquet (a graceful stop)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.flush()


def _seq(path: Path) -> str:
    return path.stem.rsplit("-", 1)[1]
