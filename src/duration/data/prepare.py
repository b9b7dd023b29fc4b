"""Prepare a month: read only the columns needed from a TLC file, give them one schema and
keep the rides of 1 to 60 minutes that meet the serving rules (`duration.core.rules`: what
the served model would refuse is not learnt from either), into data/processed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from duration.core import rules
from duration.core.records import (
    ALIASES,
    REQUIRED,
    duration_minutes,
    normalise_column,
    resolve_columns,
)
from duration.core.schema import MAX_DURATION, MIN_DURATION, Color, span_months
from duration.data import tlc
from duration.errors import DurationError
from duration.infra.files import atomic_path
from duration.settings import Settings


def processed_path(settings: Settings, color: Color | str, month: str) -> Path:
    """Where a prepared monthly file is written."""
    return settings.paths.processed / tlc.trip_file(color, month)


def _trip_columns(path: Path, columns: list[str] | None) -> tuple[pq.ParquetFile, dict[str, str]]:
    """Open a TLC parquet file; map the canonical columns to read to the file's names."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DurationError(
            f"{path} is not a readable parquet file ({tlc.short(e)}): "
            "delete it and run `duration download` again"
        ) from e
    cols = resolve_columns(pf.schema_arrow.names)
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        wanted = [" or ".join(ALIASES[c]) for c in missing]
        raise DurationError(
            f"{path} lacks required columns: {', '.join(wanted)}; is it a TLC trip file?"
        )
    if columns is not None:
        keep = set(columns) | set(REQUIRED)
        cols = {canon: name for canon, name in cols.items() if canon in keep}
    return pf, cols


def _read_column(pf: pq.ParquetFile, path: Path, canon: str, name: str) -> np.ndarray:
    """One column, normalised. Reading a column at a time holds one column's decode buffers."""
    try:
        s = pf.read(columns=[name]).column(0).to_pandas()
    except (pa.ArrowException, OSError) as e:
        raise DurationError(
            f"{path} is corrupt ({tlc.short(e)}): delete it and run `duration download` again"
        ) from e
    return normalise_column(canon, s).to_numpy()


def _frame(cols: dict[str, np.ndarray], n: int) -> pd.DataFrame:
    if "trip_distance" not in cols:
        cols = {**cols, "trip_distance": np.full(n, np.nan)}
    out = pd.DataFrame(cols, copy=False)
    pa.default_memory_pool().release_unused()
    return out


def read_trips(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read only the needed columns of a TLC parquet file, normalised to canonical names.

    `columns` (canonical names) narrows the read further; the required ones are always read.
    """
    pf, cols = _trip_columns(path, columns)
    out = {canon: _read_column(pf, path, canon, name) for canon, name in cols.items()}
    return _frame(out, pf.metadata.num_rows)


def read_rides(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """`add_duration(read_trips(path, columns))` in one pass that holds only the kept rides.

    The timestamps are read first; every other column is filtered as soon as it is read.
    """
    pf, cols = _trip_columns(path, columns)
    start = _read_column(pf, path, "pickup_datetime", cols["pickup_datetime"])
    end = _read_column(pf, path, "dropoff_datetime", cols["dropoff_datetime"])
    minutes, keep = duration_minutes(start, end)
    out = {"pickup_datetime": start[keep], "dropoff_datetime": end[keep]}
    del start, end
    for canon, name in cols.items():
        if canon not in out:
            out[canon] = _read_column(pf, path, canon, name)[keep]
    out = {canon: out[canon] for canon in cols}  # the file's canonical column order
    frame = _frame(out, int(keep.sum()))
    frame["duration"] = minutes[keep]
    return frame


PREPARED = b"duration.prepare"  # the parquet metadata key of a prepared file's version
VERSION = b"2"  # 2: the serving rules apply (1: the 1-60 minute rule alone)


def _current(dest: Path, src: Path) -> bool:
    """True when `dest` was prepared from `src` by this version of the rules."""
    if not dest.exists() or dest.stat().st_mtime < src.stat().st_mtime:
        return False
    try:
        meta = pq.read_schema(dest).metadata or {}
    except (pa.ArrowException, OSError):
        return False
    return meta.get(PREPARED) == VERSION


def keep_served(rides: pd.DataFrame, now: np.datetime64 | None = None) -> pd.DataFrame:
    """The rides that the served model would take (`duration.core.rules`)."""
    columns = {c: rides[c].to_numpy() for c in rides.columns}
    ok = rules.valid(columns, len(rides), np.datetime64("now", "us") if now is None else now)
    return rides if ok.all() else rides.loc[ok].reset_index(drop=True)


def prepare(settings: Settings, color: Color | str, month: str) -> Path:
    """Download (if needed) and prepare one month into data/processed; skip if already there."""
    dest = processed_path(settings, color, month)
    src = tlc.download(settings, color, month)
    if _current(dest, src):
        return dest
    df = keep_served(read_rides(src))
    if df.empty:
        raise DurationError(
            f"{Color(color).value} {month}: none of {pq.ParquetFile(src).metadata.num_rows} "
            f"rides lasts {MIN_DURATION:g}-{MAX_DURATION:g} minutes and meets the serving "
            f"rules; check {src} or pick another month"
        )
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), PREPARED: VERSION})
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp)
    return dest


def load_processed(
    settings: Settings, color: Color | str, month: str, columns: list[str] | None = None
) -> pd.DataFrame:
    """Read a prepared month (those of `columns` it has), preparing it first if needed.

    A training span ("2021-02+2021-03") reads its months one after another, in order."""
    if "+" in month:
        parts = [load_processed(settings, color, m, columns) for m in span_months(month)]
        return pd.concat(parts, ignore_index=True)
    path = prepare(settings, color, month)
    if columns is not None:
        present = set(pq.read_schema(path).names)
        columns = [c for c in columns if c in present]
    return pd.read_parquet(path, columns=columns)


def first_rows(path: Path, n: int) -> pd.DataFrame:
    """The first `n` rows of a parquet file, without reading the rest."""
    return next(pq.ParquetFile(path).iter_batches(batch_size=n)).to_pandas()


def newest_month(settings: Settings, color: Color | str) -> str | None:
    """The newest month prepared in data/processed for `color`, or None."""
    months = sorted(settings.paths.processed.glob(f"{Color(color).value}_tripdata_*.parquet"))
    return months[-1].stem.rsplit("_", 1)[-1] if months else None
