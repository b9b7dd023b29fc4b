"""Prepare a month: only the needed columns, one schema, the 1-60 minute rides."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from duration.core import records
from duration.data import prepare
from duration.errors import DurationError
from tests.unit.conftest import rides


def test_missing_columns_are_listed(tmp_path):
    path = tmp_path / "bad.parquet"
    rides().drop(columns=["DOLocationID", "lpep_dropoff_datetime"]).to_parquet(path)
    with pytest.raises(DurationError) as e:
        prepare.read_trips(path)
    assert "DOLocationID" in str(e.value) and "lpep_dropoff_datetime" in str(e.value)
    assert str(path) in str(e.value)


def test_corrupt_parquet_names_the_file(tmp_path):
    path = tmp_path / "green_tripdata_2021-01.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DurationError, match="green_tripdata_2021-01.parquet is not a readable"):
        prepare.read_trips(path)


def test_month_empty_after_filter_is_an_error(site):
    base = site.paths.tlc_url.removeprefix("file://")
    rides(minutes=(0.1, 0.2, 90, 120, 200, 300)).to_parquet(
        f"{base}/trip-data/green_tripdata_2021-04.parquet"
    )
    with pytest.raises(DurationError, match="green 2021-04: none of 6 rides lasts 1-60 minutes"):
        prepare.prepare(site, "green", "2021-04")
    assert not prepare.processed_path(site, "green", "2021-04").exists()


def test_prepare_writes_processed(site):
    out = pd.read_parquet(prepare.prepare(site, "green", "2021-01"))
    assert len(out) == 4 and out["duration"].between(1, 60).all()


@pytest.mark.parametrize("prefix", ["lpep_", "tpep_", ""])
@pytest.mark.parametrize("unit", ["us", "ns"])
def test_read_rides_equals_read_trips_then_add_duration(tmp_path, prefix, unit):
    df = rides(prefix, unit=unit, minutes=(0.5, 1, 10, 59.9, 60, 61))
    df["RatecodeID"] = [1.0, np.nan, 2.0, 1.0, 5.0, 1.0]
    df.loc[2, f"{prefix}dropoff_datetime"] = pd.NaT  # no end time: not a ride we can use
    path = tmp_path / "trips.parquet"
    df.to_parquet(path)
    one_pass = prepare.read_rides(path)
    pd.testing.assert_frame_equal(one_pass, records.add_duration(prepare.read_trips(path)))
    assert one_pass["duration"].tolist() == [1.0, 59.9, 60.0]
    narrow = prepare.read_rides(path, columns=["trip_distance"])
    assert "RatecodeID" not in narrow and "PULocationID" in narrow  # required ones stay
    pd.testing.assert_frame_equal(narrow, one_pass[narrow.columns])
