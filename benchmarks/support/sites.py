"""Benchmark data: rides resampled from real months, and a file:// TLC site of yellow-sized
months built from them (once, then kept under `reports/bench-data/`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from duration.data.tlc import ZONES_FILE
from duration.infra.files import atomic_path

YELLOW_MONTHS = ["2021-01", "2021-02", "2021-03"]


def rows(path: Path) -> int:
    """The rows of a parquet file, from its footer."""
    return int(pq.ParquetFile(path).metadata.num_rows)


def resample(src: Path, n: int, dest: Path, seed: int = 42, yellow: bool = False) -> Path:
    """`n` rides resampled (with replacement, fixed seed) from a real month, in TLC columns;
    `yellow` renames the lpep_ columns to tpep_ and drops the green-only ones. Kept if
    `dest` already holds `n` rides."""
    if dest.exists() and rows(dest) == n:
        return dest
    df = pd.read_parquet(src)
    if yellow:
        df = df.drop(columns=["trip_type", "ehail_fee"])
        df = df.rename(columns=lambda c: c.replace("lpep_", "tpep_"))
    idx = np.random.default_rng(seed).integers(0, len(df), n)
    with atomic_path(dest) as tmp:
        df.iloc[idx].reset_index(drop=True).to_parquet(tmp)
    return dest


def yellow_site(site: Path, green_months: list[Path], n: int) -> Path:
    """A TLC-like site of yellow-sized months (`n` rides each, resampled from the real green
    months and renamed to tpep_ columns) with the zone table beside the green files."""
    (site / "trip-data").mkdir(parents=True, exist_ok=True)
    (site / "misc").mkdir(exist_ok=True)
    for i, (src, month) in enumerate(zip(green_months, YELLOW_MONTHS, strict=False)):
        dest = site / "trip-data" / f"yellow_tripdata_{month}.parquet"
        resample(src, n, dest, seed=42 + i, yellow=True)
    shutil.copy(green_months[0].with_name(ZONES_FILE), site / "misc" / ZONES_FILE)
    return site
