"""Download, verification and prepare on small frames built in fixtures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from duration import data
from duration.errors import DurationError
from tests.code.conftest import rides


@pytest.mark.parametrize("prefix", ["lpep_", "tpep_", ""])
def test_normalise_renames_every_color(prefix):
    out = data.normalise(rides(prefix))
    assert list(out.columns)[:4] == [
        "pickup_datetime",
        "dropoff_datetime",
        "PULocationID",
        "DOLocationID",
    ]
    assert "fare_amount" not in out
    assert out["PULocationID"].dtype == np.int64


@pytest.mark.parametrize("id_dtype", ["int32", "int64", "float64", "string", "object"])
def test_location_ids_of_any_type_become_int64(id_dtype):
    df = rides(id_dtype="int64")
    df["PULocationID"] = df["PULocationID"].astype(id_dtype)
    out = data.normalise(df)
    assert out["PULocationID"].dtype == np.int64
    assert out["PULocationID"].tolist() == [10, 20, 30, 40, 50, 60]


def test_missing_location_becomes_unknown_zone():
    df = rides(id_dtype="float64")
    df.loc[2, "PULocationID"] = np.nan
    assert data.normalise(df)["PULocationID"][2] == data.UNKNOWN_ZONE


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_any_timestamp_unit_gives_the_same_duration(unit):
    out = data.prepare_frame(rides(unit=unit))
    assert out["pickup_datetime"].dtype == "datetime64[us]"
    assert out["duration"].tolist() == pytest.approx([1, 10, 59.9, 60])


def test_filter_keeps_1_to_60_minutes_inclusive():
    out = data.prepare_frame(rides(minutes=(0.99, 1, 30, 60, 60.01, -5)))
    assert out["duration"].tolist() == pytest.approx([1, 30, 60])


def test_string_timestamps_are_parsed():
    df = rides()
    df["lpep_pickup_datetime"] = df["lpep_pickup_datetime"].astype(str)
    assert len(data.prepare_frame(df)) == 4


def test_raw_records_round_trip():
    canon = data.prepare_frame(rides("tpep_"))
    raw = data.raw_records(canon, "yellow")
    assert "tpep_pickup_datetime" in raw
    assert data.normalise(raw)["PULocationID"].tolist() == canon["PULocationID"].tolist()


# ------------------------------------------------------------------ files on a fake TLC site


def test_download_verifies_and_caches(site):
    path = data.download(site, "green", "2021-01")
    assert data.verify_parquet(path) == 6
    mtime = path.stat().st_mtime_ns
    assert data.download(site, "green", "2021-01").stat().st_mtime_ns == mtime  # skipped


def test_download_refetches_a_corrupt_cached_copy(site):
    path = data.download(site, "green", "2021-01")
    path.write_bytes(b"garbage")
    assert data.verify_parquet(data.download(site, "green", "2021-01")) == 6


def test_truncated_download_is_refused_and_leaves_nothing(site):
    with pytest.raises(DurationError, match="not a readable parquet"):
        data.download(site, "green", "2021-02")
    assert list(site.raw_dir.glob("green_tripdata_2021-02*")) == []
    assert list(site.raw_dir.glob(".*part")) == []


def test_row_count_must_match_the_published_count(site):
    with pytest.raises(DurationError, match="the TLC publishes 999"):
        data.download(site, "green", "2021-03")
    assert not data.raw_path(site, "green", "2021-03").exists()


def test_missing_month_names_month_and_base(site):
    with pytest.raises(DurationError, match="green 2020-05 is not available at file://"):
        data.download(site, "green", "2020-05")


def test_missing_columns_are_listed(tmp_path):
    path = tmp_path / "bad.parquet"
    rides().drop(columns=["DOLocationID", "lpep_dropoff_datetime"]).to_parquet(path)
    with pytest.raises(DurationError) as e:
        data.read_trips(path)
    assert "DOLocationID" in str(e.value) and "lpep_dropoff_datetime" in str(e.value)
    assert str(path) in str(e.value)


def test_corrupt_parquet_names_the_file(tmp_path):
    path = tmp_path / "green_tripdata_2021-01.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DurationError, match="green_tripdata_2021-01.parquet is not a readable"):
        data.read_trips(path)


def test_month_empty_after_filter_is_an_error(site):
    base = site.tlc_url.removeprefix("file://")
    rides(minutes=(0.1, 0.2, 90, 120, 200, 300)).to_parquet(
        f"{base}/trip-data/green_tripdata_2021-04.parquet"
    )
    with pytest.raises(DurationError, match="green 2021-04: none of 6 rides lasts 1-60 minutes"):
        data.prepare(site, "green", "2021-04")
    assert not data.processed_path(site, "green", "2021-04").exists()


def test_prepare_writes_processed(site):
    out = pd.read_parquet(data.prepare(site, "green", "2021-01"))
    assert len(out) == 4 and out["duration"].between(1, 60).all()


@pytest.mark.parametrize("prefix", ["lpep_", "tpep_", ""])
@pytest.mark.parametrize("unit", ["us", "ns"])
def test_read_rides_equals_read_trips_then_add_duration(tmp_path, prefix, unit):
    df = rides(prefix, unit=unit, minutes=(0.5, 1, 10, 59.9, 60, 61))
    df["RatecodeID"] = [1.0, np.nan, 2.0, 1.0, 5.0, 1.0]
    df.loc[2, f"{prefix}dropoff_datetime"] = pd.NaT  # no end time: not a ride we can use
    path = tmp_path / "trips.parquet"
    df.to_parquet(path)
    one_pass = data.read_rides(path)
    pd.testing.assert_frame_equal(one_pass, data.add_duration(data.read_trips(path)))
    assert one_pass["duration"].tolist() == [1.0, 59.9, 60.0]
    narrow = data.read_rides(path, columns=["trip_distance"])
    assert "RatecodeID" not in narrow and "PULocationID" in narrow  # required ones stay
    pd.testing.assert_frame_equal(narrow, one_pass[narrow.columns])
