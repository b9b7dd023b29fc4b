"""TLC records to canonical rides: names, dtypes and the 1-60 minute rule, on small frames."""

from __future__ import annotations

import numpy as np
import pytest

from duration.core import records
from duration.core.schema import UNKNOWN_ZONE
from tests.unit.conftest import rides


@pytest.mark.parametrize("prefix", ["lpep_", "tpep_", ""])
def test_normalise_renames_every_color(prefix):
    out = records.normalise(rides(prefix))
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
    out = records.normalise(df)
    assert out["PULocationID"].dtype == np.int64
    assert out["PULocationID"].tolist() == [10, 20, 30, 40, 50, 60]


def test_missing_location_becomes_unknown_zone():
    df = rides(id_dtype="float64")
    df.loc[2, "PULocationID"] = np.nan
    assert records.normalise(df)["PULocationID"][2] == UNKNOWN_ZONE


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_any_timestamp_unit_gives_the_same_duration(unit):
    out = records.prepare_frame(rides(unit=unit))
    assert out["pickup_datetime"].dtype == "datetime64[us]"
    assert out["duration"].tolist() == pytest.approx([1, 10, 59.9, 60])


def test_filter_keeps_1_to_60_minutes_inclusive():
    out = records.prepare_frame(rides(minutes=(0.99, 1, 30, 60, 60.01, -5)))
    assert out["duration"].tolist() == pytest.approx([1, 30, 60])


def test_string_timestamps_are_parsed():
    df = rides()
    df["lpep_pickup_datetime"] = df["lpep_pickup_datetime"].astype(str)
    assert len(records.prepare_frame(df)) == 4


def test_raw_records_round_trip():
    canon = records.prepare_frame(rides("tpep_"))
    raw = records.raw_records(canon, "yellow")
    assert "tpep_pickup_datetime" in raw
    assert records.normalise(raw)["PULocationID"].tolist() == canon["PULocationID"].tolist()
