"""The prediction log: one row per served ride (`ServedRide`), written off the request path.

Each scoring worker appends rows to a bounded in-memory buffer; a background thread writes
them every `flush_s` seconds as a new parquet file, atomically (a file is complete or
absent), so a worker killed with -9 loses at most its last `flush_s` of rows. When the disk
is full the rows wait in memory (up to `max_pending`, then newer rows are dropped and
counted), serving goes on, the serving log says so once, and writing resumes when space
returns. Each worker merges its files COMPACT_PARTS at a time, so that a long-running
service leaves few files. Each worker's counters are in a small JSON file beside (not
under) the log. `duration.serving.log_read` reads it back.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, NewType, get_type_hints

import pyarrow as pa
import pyarrow.parquet as pq

from duration.core.records import INPUTS
from duration.infra.files import atomic_path, utc_stamp, write_atomic

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
COMPACT_PARTS = 300  # a worker merges its files 300 at a time (5 minutes at 1 s flushes)


@dataclass(kw_only=True)
class Counters:
    """A worker's log, counted: what it answered, wrote, holds, dropped and refused."""

    pid: int
    model_name: str
    model_version: str
    arm: str
    answered_requests: int = 0
    failed_requests: int = 0  # bad JSON, missing columns...: never logged as predictions
    logged_rides: int = 0  # written to files
    pending_rides: int = 0  # in memory, waiting for the next flush (or for space)
    dropped_rides: int = 0  # arrived while the buffer was full
    unscored_copies: int = 0  # a shadow's: copies of requests acknowledged, not yet scored
    files: int = 0
    writing: bool = True  # False while the last flush failed
    error: str = ""
    updated_at: float = field(default_factory=time.time)


class PredictionLog:
    """One worker's buffer and its writer thread (`start`, `add`, `failed`, `close`)."""

    def __init__(
        self,
        folder: Path,
        status: Path,
        counters: Counters,
        flush_s: float = 1.0,
        max_pending: int = 200_000,
    ) -> None:
        self.folder, self.status, self.counters = folder, status, counters
        self.flush_s, self.max_pending = flush_s, max_pending
        self._rows: list[ServedRide] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._seq = 0
        self.token = f"{os.getpid()}-{secrets.token_hex(3)}"  # this worker's, in file names
        self._parts: list[Path] = []  # written since the last compaction

    def start(self) -> PredictionLog:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def add(self, rows: list[ServedRide]) -> None:
        """Buffer one answered request's rides; never blocks for long and never raises: a
        full buffer drops them, and counts them."""
        with self._lock:
            self.counters.answered_requests += 1
            if len(self._rows) + len(rows) > self.max_pending:
                self.counters.dropped_rides += len(rows)
                return
            self._rows.extend(rows)
            self.counters.pending_rides = len(self._rows)

    def failed(self) -> None:
        """Count a request that got no prediction."""
        with self._lock:
            self.counters.failed_requests += 1

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one new file; on failure keep them for the next try."""
        with self._lock:
            rows, self._rows = self._rows, []
        if rows:
            self._write(rows)
        self._report()

    def _write(self, rows: list[ServedRide]) -> None:
        self._seq += 1
        path = self.folder / f"{utc_stamp()}-{self.token}-{self._seq:06d}.parquet"
        try:
            table = table_of(rows)
            with atomic_path(path) as tmp:
                pq.write_table(table, tmp)
        except OSError as e:
            with self._lock:  # the rows go back in front of any newer ones
                self._rows[:0] = rows
                self.counters.pending_rides = len(self._rows)
            self._failing(e)
            return
        with self._lock:
            self.counters.pending_rides = len(self._rows)
            self.counters.logged_rides += len(rows)
            self.counters.files += 1
        self._parts.append(path)
        if len(self._parts) >= COMPACT_PARTS:
            self._compact()
        if not self.counters.writing:
            self.counters.writing, self.counters.error = True, ""
            print(f"duration: prediction log: writing to {self.folder} again", file=sys.stderr)

    def _compact(self) -> None:
        """Merge this worker's last COMPACT_PARTS files into one (atomically), then remove
        them. The merged file's name says which it holds: readers skip any left behind."""
        parts, first, last = self._parts, self._parts[0], self._parts[-1]
        stamp = first.name.split("-", 1)[0]
        merged = self.folder / f"{stamp}-{self.token}-{_seq(first)}-{_seq(last)}.parquet"
        try:
            with atomic_path(merged) as tmp:
                pq.write_table(pa.concat_tables(pq.read_table(p) for p in parts), tmp)
        except OSError:
            return  # no room to merge: the parts stay as they are, and it tries again later
        for p in parts:
            p.unlink(missing_ok=True)
        self._parts = []

    def _failing(self, e: OSError) -> None:
        if self.counters.writing:  # said once, not on every flush
            print(
                f"duration: prediction log: cannot write to {self.folder} ({e.strerror or e}); "
                "serving goes on, the rows wait in memory, and writing resumes when space "
                "returns",
                file=sys.stderr,
                flush=True,
            )
        self.counters.writing, self.counters.error = False, str(e.strerror or e)

    def _report(self) -> None:
        """This worker's counters, beside the log (where a full log disk does not reach)."""
        self.counters.updated_at = time.time()
        with contextlib.suppress(OSError):
            write_atomic(self.status / f"{os.getpid()}.json", json.dumps(asdict(self.counters)))

    def close(self) -> None:
        """Stop the writer and flush what is left (a graceful stop loses nothing)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.flush()


def _loggable(kind: pa.DataType, values: tuple[object, ...]) -> list[object]:
    """A column's values as the log's type takes them (what does not fit becomes null)."""
    if kind == pa.string():
        return [None if v is None else str(v) for v in values]
    if kind == pa.int64():
        return [v if type(v) is int else None for v in values]
    return [
        float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None for v in values
    ]


def table_of(rows: list[ServedRide]) -> pa.Table:
    """The rows as a table of SCHEMA: each column converted at once, value by value only
    when a client sent something odd (a string zone, a number as time)."""
    arrays = []
    for f, values in zip(SCHEMA, zip(*rows, strict=True), strict=True):
        try:
            arrays.append(pa.array(values, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays.append(pa.array(_loggable(f.type, values), type=f.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def _seq(path: Path) -> str:
    return path.stem.rsplit("-", 1)[1]
