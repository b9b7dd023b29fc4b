"""A TLC ride record: the canonical columns, the names they have across colors and years,
one dtype each whatever the source, and the course's 1-60 minute rule. Pure: the logged
model normalises its input with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from duration.core.schema import MAX_DURATION, MIN_DURATION, UNKNOWN_ZONE, Color

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
# What a ride is known by when it starts: every column but the dropoff (a served ride's inputs).
INPUTS = tuple(c for c in ALIASES if c != "dropoff_datetime")
PREFIXES = {Color.green: "lpep_", Color.yellow: "tpep_", Color.fhv: ""}


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


def _exact_int(v: object) -> bool:
    """A Python int that float64 holds exactly (what pandas converts the same way)."""
    return type(v) is int and abs(v) < 2**53


def _typed(canon: str, s: pd.Series | np.ndarray) -> np.ndarray | None:
    """`normalise_column` for a column already of its plain numpy type, without pandas;
    None for anything else (strings, nullable types, time zones, mixed objects)."""
    a = s if isinstance(s, np.ndarray) else s.to_numpy()
    kind = a.dtype.kind
    if canon.endswith("_datetime"):
        return a.astype("datetime64[us]") if kind == "M" else None
    if canon.endswith("LocationID"):
        return a.astype(np.int64) if kind in "iu" else None
    if kind in "fiu":
        return a.astype(np.float64)
    if kind == "O" and all(v is None or type(v) is float or _exact_int(v) for v in a):
        return np.array([np.nan if v is None else v for v in a], dtype=np.float64)
    return None


def canonical(columns: Mapping[str, Any], n: int) -> dict[str, np.ndarray] | None:
    """`normalise` of `n` rides as a mapping of column to array, for columns (a frame's, or
    arrays) that already have plain numpy types (what MLflow's schema check hands the served
    model); None when any needs pandas' conversions (then `normalise` is the way)."""
    out: dict[str, np.ndarray] = {}
    for canon, name in resolve_columns(list(columns)).items():
        values = _typed(canon, columns[name])
        if values is None:
            return None
        out[canon] = values
    if "trip_distance" not in out:
        out["trip_distance"] = np.full(n, np.nan)
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


def prepare_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Raw TLC records -> canonical rides with their duration, filtered (for notebooks)."""
    return add_duration(normalise(df))


def raw_records(df: pd.DataFrame, color: Color | str) -> pd.DataFrame:
    """Canonical rides -> the raw TLC column names of `color` (what a model consumer sends)."""
    prefix = PREFIXES[Color(color)]
    return df.rename(
        columns={
            "pickup_datetime": f"{prefix}pickup_datetime",
            "dropoff_datetime": f"{prefix}dropoff_datetime",
        }
    )
