"""Reading the prediction log back: its parquet files and its segments as one table of
`ServedRide`s, each ride once by its key; the files that cannot be read, skipped and named
(and moved aside by `check`); an export; and the live workers' counters, summed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from duration.errors import DurationError
from duration.infra.files import atomic_path
from duration.serving.log import KEY, SCHEMA, SEGMENT, parse_segment, table_of

QUARANTINE = "quarantine"
ATTEMPTS = 5  # reads of the folder while workers rotate segments under it


@dataclass(frozen=True, kw_only=True)
class Skipped:
    """A file of the log that could not be read."""

    path: Path
    size: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class LogTable:
    """Every ride the log holds, once each, and the files it could not read."""

    table: pa.Table
    skipped: list[Skipped] = field(default_factory=list)
    torn_bytes: int = 0  # at the end of segments: a line cut by a crash, or being written

    def warning(self) -> str | None:
        """One line on what was skipped, and what to do (None when nothing was)."""
        if not self.skipped:
            return None
        size = sum(s.size for s in self.skipped)
        names = ", ".join(s.path.name for s in self.skipped[:3])
        more = f" and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
        n = len(self.skipped)
        return (
            f"{n} file{'s' if n > 1 else ''} skipped ({size} bytes): {names}{more}; run "
            "`duration serve log --check`"
        )


def files(folder: Path) -> list[Path]:
    """The log's parquet files in time order, without the parts a merged file already
    holds (left behind when a worker stopped between writing the merged file and removing
    them). A part is STAMP-PID-HEX-SEQ, a merged file STAMP-PID-HEX-FIRST-LAST."""
    found = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    merged: dict[str, list[tuple[int, int]]] = {}
    for f in found:
        bits = f.stem.split("-")
        if len(bits) == 5:
            merged.setdefault("-".join(bits[1:3]), []).append((int(bits[3]), int(bits[4])))

    def covered(f: Path) -> bool:
        bits = f.stem.split("-")
        ranges = merged.get("-".join(bits[1:3]), []) if len(bits) == 4 else []
        return any(a <= int(bits[3]) <= b for a, b in ranges)

    return [f for f in found if not covered(f)]


def segments(folder: Path) -> list[Path]:
    """The workers' segments: the open ones, and any not yet turned into parquet."""
    return sorted(folder.glob(f"{SEGMENT}*.jsonl")) if folder.is_dir() else []


def _parquet(path: Path) -> pa.Table:
    return pq.read_table(path, schema=SCHEMA)


def _once(folder: Path) -> LogTable:
    """One pass over the folder; FileNotFoundError when a worker moved a file under it."""
    tables, skipped, torn = [], [], 0
    for path in files(folder):
        try:
            tables.append(_parquet(path))
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException) as e:
            size = path.stat().st_size if path.exists() else 0
            skipped.append(Skipped(path=path, size=size, reason=" ".join(str(e).split())[:160]))
    for path in segments(folder):
        requests, cut = parse_segment(path.read_bytes())
        torn += cut
        if requests:
            tables.append(table_of(requests))
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    return LogTable(table=_once_by_key(table), skipped=skipped, torn_bytes=torn)


def _once_by_key(table: pa.Table) -> pa.Table:
    """Each ride once: the first row of each (request_id, arm, position); rows logged
    before the key was recorded (no position) are kept as they are."""
    if table.num_rows == 0:
        return table
    keyed = pc.is_valid(table.column("position"))
    rows = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    first = rows.filter(keyed).group_by(KEY, use_threads=False).aggregate([("_row", "min")])
    unkeyed = rows.filter(pc.invert(keyed)).column("_row")
    keep = pa.concat_arrays([first.column("_row_min").combine_chunks(), unkeyed.combine_chunks()])
    return table.take(pc.take(keep, pc.sort_indices(keep)))


def read(folder: Path) -> LogTable:
    """Every ride of the log, once, in the order served (empty when nothing was logged; a
    column that older files lack is null in their rows)."""
    for _ in range(ATTEMPTS - 1):
        with contextlib.suppress(FileNotFoundError):
            return _once(folder)
    return _once(folder)


def export(folder: Path, output: Path) -> LogTable:
    """Write every logged ride to one parquet file (atomically); a one-line error when
    nothing was logged yet."""
    log = read(folder)
    if log.table.num_rows == 0:
        raise DurationError(
            f"nothing served has been logged in {folder} yet: serve rides first "
            "(`make serve`, then `duration traffic --month YYYY-MM`)"
        )
    with atomic_path(output) as tmp:
        pq.write_table(log.table, tmp)
    return log


def check(folder: Path) -> list[Skipped]:
    """The log's finished files that cannot be read, moved into `quarantine/` beside the
    log (a segment a worker may still write is never touched)."""
    bad = read(folder).skipped
    if not bad:
        return []
    aside = folder.parent / QUARANTINE
    aside.mkdir(parents=True, exist_ok=True)
    moved = []
    for s in bad:
        with contextlib.suppress(FileNotFoundError):
            shutil.move(str(s.path), aside / s.path.name)
            moved.append(Skipped(path=aside / s.path.name, size=s.size, reason=s.reason))
    return moved


@dataclass(frozen=True, kw_only=True)
class LogCounts:
    """The live workers' counters, summed (`as_of`: when the oldest was reported)."""

    answered_requests: int = 0
    failed_requests: int = 0
    refused_requests: int = 0
    refused_rides: int = 0
    logged_rides: int = 0
    pending_rides: int = 0
    dropped_rides: int = 0
    unscored_copies: int = 0
    files: int = 0
    workers: int = 0
    as_of: float | None = None
    writing: bool = True
    problem: str | None = None


SUMMED = (
    "answered_requests",
    "failed_requests",
    "refused_requests",
    "refused_rides",
    "logged_rides",
    "pending_rides",
    "dropped_rides",
    "unscored_copies",
    "files",
)


def counts(folder: Path, alive: Callable[[int], bool]) -> LogCounts:
    """The live workers' counters, summed (`alive(pid)`: whether a worker still runs; the
    files of workers that stopped are removed: their rides are in the log already)."""
    workers = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, KeyError):
            c = json.loads(path.read_text())
            if alive(int(c["pid"])):
                workers.append(c)
            else:
                path.unlink()
    summed = {k: sum(int(w.get(k, 0)) for w in workers) for k in SUMMED}
    errors = sorted({w["error"] for w in workers if w.get("error")})
    problem = None
    if errors:
        problem = (
            f"the prediction log cannot write ({'; '.join(errors)}): serving goes on, "
            f"{summed['pending_rides']} rides wait in memory, and logging resumes when space "
            "returns"
        )
    return LogCounts(
        **summed,
        workers=len(workers),
        # counted as of the oldest worker's report (each reports after every flush)
        as_of=min((float(w["updated_at"]) for w in workers), default=None),
        writing=all(w.get("writing", True) for w in workers),
        problem=problem,
    )


def size(folder: Path) -> int:
    """Bytes the log takes (its files and segments)."""
    return sum(os.path.getsize(p) for p in [*files(folder), *segments(folder)] if p.exists())
