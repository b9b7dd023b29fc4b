"""Download TLC monthly files into data/raw and prepare them into data/processed."""

from __future__ import annotations

import csv
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from duration.config import MAX_DURATION, MIN_DURATION, Color, Settings, check_month, span_months
from duration.errors import DurationError, NotPublished
from duration.files import atomic_path

ZONES_FILE = "taxi_zone_lookup.csv"
UNKNOWN_ZONE = 264  # the TLC's own LocationID for an unknown zone
CHUNK = 1 << 20

# Canonical column -> the names it has across colors and years (matched case-insensitively).
ALIASES: dict[str, tuple[str, ...]] = {
    "pickup_datetime": ("lpep_pickup_datetime", "tpep_pickup_datetime", "pickup_datetime"),
    "dropoff_datetime": ("lpep_dropoff_datetime", "tpep_dropoff_datetime", "dropoff_datetime"),
    "PULocationID": ("PULocationID",),
    "DOLocationID": ("DOLocationID",),
    "trip_distance": ("trip_distance", "trip_miles"),
    # Optional: known when the ride starts (meter or dispatch), where a color records them.
    "VendorID": ("VendorID",),
    "RatecodeID": ("RatecodeID",),
    "trip_type": ("trip_type",),
    "passenger_count": ("passenger_count",),
}
REQUIRED = ("pickup_datetime", "dropoff_datetime", "PULocationID", "DOLocationID")
IDENTITY = ["pickup_datetime", "PULocationID", "DOLocationID", "trip_distance"]


def trip_file(color: Color | str, month: str) -> str:
    """The TLC's file name for one color and month."""
    return f"{Color(color).value}_tripdata_{check_month(month)}.parquet"


def trip_url(settings: Settings, color: Color | str, month: str) -> str:
    """Where the TLC publishes a monthly file."""
    return f"{settings.tlc_url}/trip-data/{trip_file(color, month)}"


def raw_path(settings: Settings, color: Color | str, month: str) -> Path:
    """Where a downloaded monthly file is cached."""
    return settings.raw_dir / trip_file(color, month)


def processed_path(settings: Settings, color: Color | str, month: str) -> Path:
    """Where a prepared monthly file is written."""
    return settings.processed_dir / trip_file(color, month)


# --------------------------------------------------------------------------- download


class _Transient(Exception):
    pass


def _open(url: str, timeout: float = 60.0):
    try:
        return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - http(s) and file only
    except urllib.error.HTTPError as e:
        if e.code in (403, 404):
            raise FileNotFoundError(url) from e
        if e.code in (408, 429) or e.code >= 500:
            raise _Transient(f"HTTP {e.code}") from e
        raise DurationError(f"{url} answered HTTP {e.code}: check DURATION_TLC_URL") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, FileNotFoundError | IsADirectoryError):
            raise FileNotFoundError(url) from e
        if isinstance(e.reason, OSError | socket.timeout | str):
            raise _Transient(str(e.reason)) from e
        raise
    except (TimeoutError, ConnectionError) as e:
        raise _Transient(str(e)) from e


def _fetch(url: str, dest: Path, progress: bool) -> None:
    """Stream `url` into `dest` (a temporary path), with a progress bar for network URLs."""
    with _open(url) as resp, open(dest, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar = None
        if progress and not url.startswith("file:"):
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=Path(dest).name, leave=False)
        try:
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        except (TimeoutError, ConnectionError, OSError) as e:
            raise _Transient(str(e)) from e
        finally:
            if bar is not None:
                bar.close()


def with_retries(
    action: Callable[[], None], what: str, attempts: int = 4, backoff: float = 1.0
) -> None:
    """Run `action`, retrying transient network errors with exponential backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except _Transient as e:
            if attempt == attempts:
                raise DurationError(
                    f"{what}: still failing after {attempts} tries ({e}); check the network "
                    "or DURATION_TLC_URL and run the command again"
                ) from e
            time.sleep(backoff * 2 ** (attempt - 1))


def published_counts(settings: Settings, color: Color | str, year: str) -> dict[str, int]:
    """The TLC's published row count per file for one color and year, where the base has it."""
    cache = settings.raw_dir / "metadata" / f"{Color(color).value}_tripmetadata_{year}.csv"
    if not cache.exists():
        url = f"{settings.tlc_url}/metadata/{cache.name}"
        try:
            with atomic_path(cache) as tmp:
                with_retries(lambda: _fetch(url, tmp, progress=False), f"download {url}")
        except FileNotFoundError:
            return {}
    with open(cache, newline="") as f:
        return {
            row["file_name"]: int(row["file_num_rows"])
            for row in csv.DictReader(f)
            if row.get("file_num_rows", "").isdigit()
        }


def verify_parquet(path: Path, expected_rows: int | None = None) -> int:
    """Check that the parquet footer reads (and the row count matches); return the row count."""
    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError) as e:
        raise DurationError(
            f"{path} is not a readable parquet file ({_short(e)}): delete it and download again"
        ) from e
    if expected_rows is not None and rows != expected_rows:
        raise DurationError(
            f"{path} has {rows} rows but the TLC publishes {expected_rows}: "
            "the copy is incomplete, delete it and download again"
        )
    return rows


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:160] if str(e) else type(e).__name__


def download(settings: Settings, color: Color | str, month: str, progress: bool = True) -> Path:
    """Fetch one monthly file into data/raw atomically and verify it; skip a complete copy."""
    color = Color(color)
    dest = raw_path(settings, color, month)
    expected = published_counts(settings, color, month[:4]).get(dest.name)
    if dest.exists():
        try:
            verify_parquet(dest, expected)
            return dest
        except DurationError:
            dest.unlink()  # an incomplete or corrupt cached copy: fetch it again
    url = trip_url(settings, color, month)
    tmp = None
    try:
        with atomic_path(dest) as tmp:
            with_retries(lambda: _fetch(url, tmp, progress), f"download {url}")
            verify_parquet(tmp, expected)
    except FileNotFoundError as e:
        raise NotPublished(
            f"{color.value} {month} is not available at {settings.tlc_url} ({url} not found): "
            "pick a published month or check DURATION_TLC_URL"
        ) from e
    except DurationError as e:
        raise DurationError(str(e).replace(str(tmp), url)) from e
    return dest


def download_zones(settings: Settings) -> Path:
    """Fetch the TLC zone table into data/raw (atomically; skipped when cached)."""
    dest = settings.raw_dir / ZONES_FILE
    if dest.exists() and dest.stat().st_size > 0:
        return dest
    url = f"{settings.tlc_url}/misc/{ZONES_FILE}"
    try:
        with atomic_path(dest) as tmp:
            with_retries(lambda: _fetch(url, tmp, progress=False), f"download {url}")
            read_zones(tmp)
    except FileNotFoundError as e:
        raise DurationError(f"{url} not found: check DURATION_TLC_URL") from e
    return dest


def read_zones(path: Path) -> pd.DataFrame:
    """Read the zone table (LocationID, Borough, Zone, service_zone)."""
    try:
        zones = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise DurationError(f"{path} is not a readable zone table ({_short(e)})") from e
    missing = {"LocationID", "Borough", "service_zone"} - set(zones.columns)
    if missing:
        raise DurationError(f"{path} lacks columns {sorted(missing)}: download it again")
    return zones


def zone_map(zones: pd.DataFrame, column: str = "Borough") -> dict[int, str]:
    """LocationID -> a zone-table column (Borough or service_zone)."""
    values = zones[column].fillna("Unknown").astype(str)
    return {int(k): v for k, v in zip(zones["LocationID"], values, strict=True)}


# --------------------------------------------------------------------------- prepare


def resolve_columns(names: list[str]) -> dict[str, str]:
    """Map each canonical column to the name it has in a file, matched case-insensitively."""
    lower = {n.lower(): n for n in names}
    found = {}
    for canon, aliases in ALIASES.items():
        for alias in aliases:
            if alias.lower() in lower:
                found[canon] = lower[alias.lower()]
                break
    return found


def _location_ids(s: pd.Series) -> pd.Series:
    if pd.api.types.is_integer_dtype(s) and not s.hasnans:
        return s.astype("int64")  # the common case: no float round trip
    if not pd.api.types.is_numeric_dtype(s):
        s = pd.to_numeric(s.astype("string").str.strip(), errors="coerce")
    s = s.astype("Float64").round().astype("Int64")
    return s.fillna(UNKNOWN_ZONE).astype("int64")


def _timestamps(s: pd.Series) -> pd.Series:
    if not pd.api.types.is_datetime64_any_dtype(s):
        s = pd.to_datetime(s, errors="coerce")
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("America/New_York").dt.tz_localize(None)
    return s.astype("datetime64[us]")


def normalise_column(canon: str, s: pd.Series) -> pd.Series:
    """One column, given the canonical dtype of `canon`."""
    if canon.endswith("_datetime"):
        return _timestamps(s)
    if canon.endswith("LocationID"):
        return _location_ids(s)
    return pd.to_numeric(s, errors="coerce").astype("float64")


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Rename TLC columns to canonical names and give them one dtype each, whatever the source."""
    cols = resolve_columns(list(df.columns))
    out = pd.DataFrame(index=df.index)
    for canon, name in cols.items():
        out[canon] = normalise_column(canon, df[name])
    if "trip_distance" not in out:
        out["trip_distance"] = np.nan
    return out


def duration_minutes(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ride durations in minutes, and which rides last 1 to 60 minutes (the course's rule)."""
    minutes = (end - start) / np.timedelta64(1, "m")  # NaT gives NaN, which is not kept
    return minutes, (minutes >= MIN_DURATION) & (minutes <= MAX_DURATION)


def add_duration(df: pd.DataFrame) -> pd.DataFrame:
    """Add `duration` in minutes and keep rides of 1 to 60 minutes."""
    minutes, keep = duration_minutes(
        df["pickup_datetime"].to_numpy(dtype="datetime64[us]"),
        df["dropoff_datetime"].to_numpy(dtype="datetime64[us]"),
    )
    out = df.loc[keep].reset_index(drop=True)
    out["duration"] = minutes[keep]
    return out


def _trip_columns(path: Path, columns: list[str] | None) -> tuple[pq.ParquetFile, dict[str, str]]:
    """Open a TLC parquet file; map the canonical columns to read to the file's names."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DurationError(
            f"{path} is not a readable parquet file ({_short(e)}): "
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
            f"{path} is corrupt ({_short(e)}): delete it and run `duration download` again"
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


def prepare_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Normalised rides -> rides with duration, filtered; pure, for tests and notebooks."""
    return add_duration(normalise(df))


def prepare(settings: Settings, color: Color | str, month: str) -> Path:
    """Download (if needed) and prepare one month into data/processed; skip if already there."""
    dest = processed_path(settings, color, month)
    src = download(settings, color, month)
    if dest.exists() and dest.stat().st_mtime >= src.stat().st_mtime:
        return dest
    df = read_rides(src)
    if df.empty:
        raise DurationError(
            f"{Color(color).value} {month}: none of {pq.ParquetFile(src).metadata.num_rows} "
            "rides lasts "
            f"{MIN_DURATION:g}-{MAX_DURATION:g} minutes; check {src} or pick another month"
        )
    with atomic_path(dest) as tmp:
        df.to_parquet(tmp, index=False)
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


def raw_records(df: pd.DataFrame, color: Color | str) -> pd.DataFrame:
    """Canonical rides -> the raw TLC column names of `color` (what a model consumer sends)."""
    prefix = {"green": "lpep_", "yellow": "tpep_", "fhv": ""}[Color(color).value]
    return df.rename(
        columns={
            "pickup_datetime": f"{prefix}pickup_datetime",
            "dropoff_datetime": f"{prefix}dropoff_datetime",
        }
    )
