"""Small TLC-like frames and a tiny file:// TLC site, built here: no mirror, no server."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from duration.settings import Paths, Settings


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


def synthetic_rides(n: int, seed: int, distance_scale: float = 1.0) -> pd.DataFrame:
    """Rides of January 2021 whose duration grows with distance (for monitoring)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 31 * 86400, n), "s")
    distance = rng.gamma(2.0, 1.5, n) * distance_scale
    return pd.DataFrame(
        {
            "pickup_datetime": start,
            "PULocationID": rng.choice([41, 74, 75, 166], n),
            "DOLocationID": rng.choice([41, 42, 74, 75, 236], n),
            "trip_distance": distance,
            "VendorID": rng.choice([1.0, 2.0], n),
            "RatecodeID": np.where(rng.random(n) < 0.5, 1.0, np.nan),
            "trip_type": 1.0,
            "passenger_count": rng.choice([1.0, 2.0, np.nan], n),
            "duration": 4 * distance + rng.normal(0, 2, n),
        }
    )


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
    return Settings(paths=Paths(data_dir=tmp_path / "data", tlc_url=f"file://{base}"))
