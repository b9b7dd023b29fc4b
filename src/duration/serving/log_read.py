"""Reading the prediction log back: its files as one table of `ServedRide`s, an export, and
the live workers' counters, summed."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from duration.errors import DurationError
from duration.infra.files import atomic_path
from duration.serving.log import SCHEMA


def files(folder: Path) -> list[Path]:
    """The log's files in time order, without the parts a merged file already holds
    (left behind when a worker stopped between writing the merged file and removing them).
    A part is STAMP-PID-HEX-SEQ, a merged file STAMP-PID-HEX-FIRST-LAST."""
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


def read(folder: Path) -> pa.Table:
    """Every complete file of the log, as one table of SCHEMA (empty when nothing was
    logged; a column that older files lack is null in their rows)."""
    tables = [pq.read_table(f, schema=SCHEMA) for f in files(folder)]
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def export(folder: Path, output: Path) -> pa.Table:
    """Write every logged row to one parquet file (atomically); a one-line error when
    nothing was logged yet."""
    table = read(folder)
    if table.num_rows == 0:
        raise DurationError(
            f"nothing served has been logged in {folder} yet: serve rides first "
            "(`make serve`, then `duration traffic --month YYYY-MM`)"
        )
    with atomic_path(output) as tmp:
        pq.write_table(table, tmp)
    return table


@dataclass(frozen=True, kw_only=True)
class LogCounts:
    """The live workers' counters, summed (`as_of`: when the oldest was reported)."""

    answered_requests: int = 0
    failed_requests: int = 0
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
    "logged_rides",
    "pending_rides",
    "dropped_rides",
    "unscored_copies",
    "files",
)


def counts(folder: Path, alive: Callable[[int], bool]) -> LogCounts:
    """The live workers' counters, summed (`alive(pid)`: whether a worker still runs; the
    files of workers that stopped are removed: their rows are in the log already)."""
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
