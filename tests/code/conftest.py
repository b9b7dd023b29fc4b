"""Small TLC-like frames and a tiny file:// TLC site, built here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from duration.config import Settings


def rides(prefix="lpep_", n=6, id_dtype="int64", unit="us", minutes=(0.5, 1, 10, 59.9, 60, 61)):
    start = pd.Timestamp("2021-01-05 08:00").as_unit(unit)
    pickup = pd.Series([start + pd.Timedelta(minutes=i) for i in range(n)]).astype(
        f"datetime64[{unit}]"
    )
    dropoff = pickup + pd.to_timedelta(list(minutes)[:n], unit="min")
    ids = pd.Series(np.arange(1, n + 1) * 10).astype(id_dtype)
    pu_name = "PUlocationID" if prefix == "" else "PULocationID"
    df = pd.DataFrame(
        {
            f"{prefix}pickup_datetime": pickup,
            f"{prefix}dropoff_datetime": dropoff.astype(f"datetime64[{unit}]"),
            pu_name: ids,
            "DOLocationID": ids + 1,
            "fare_amount": 10.0,
        }
    )
    if prefix:
        df["trip_distance"] = np.linspace(0.5, 3, n)
    return df


@pytest.fixture
def site(tmp_path):
    """A tiny TLC-like site (file://) with one good month, one truncated, and metadata."""
    base = tmp_path / "site"
    (base / "trip-data").mkdir(parents=True)
    (base / "misc").mkdir()
    (base / "metadata").mkdir()
    rides().to_parquet(base / "trip-data" / "green_tripdata_2021-01.parquet")
    good = (base / "trip-data" / "green_tripdata_2021-01.parquet").read_bytes()
    (base / "trip-data" / "green_tripdata_2021-02.parquet").write_bytes(good[: len(good) // 2])
    rides().to_parquet(base / "trip-data" / "green_tripdata_2021-03.parquet")
    pd.DataFrame(
        {
            "LocationID": [10, 20],
            "Borough": ["Bronx", "Queens"],
            "Zone": ["a", "b"],
            "service_zone": ["Boro Zone", "Boro Zone"],
        }
    ).to_csv(base / "misc" / "taxi_zone_lookup.csv", index=False)
    pd.DataFrame(
        {
            "file_name": ["green_tripdata_2021-01.parquet", "green_tripdata_2021-03.parquet"],
            "file_num_rows": [6, 999],
        }
    ).to_csv(base / "metadata" / "green_tripmetadata_2021.csv", index=False)
    return Settings(data_dir=tmp_path / "data", tlc_url=f"file://{base}")
