"""The real TLC files, read through the offline mirror (skipped where it is absent, not in CI)."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from duration.data import prepare, tlc

MONTHS = [
    "2021-01",
    "2021-02",
    "2021-03",
    "2021-04",
    "2021-05",
    "2022-01",
    "2022-02",
    "2022-03",
    "2023-01",
    "2023-02",
    "2023-03",
    "2023-04",
]


@pytest.mark.parametrize("month", MONTHS)
def test_every_mirrored_month_downloads_verified_and_prepares(settings, month):
    published = tlc.published_counts(settings, "green", month[:4])
    path = tlc.download(settings, "green", month)
    assert tlc.verify_parquet(path) == published[path.name]
    out = pd.read_parquet(prepare.prepare(settings, "green", month))
    assert out["duration"].between(1, 60).all()
    assert out["PULocationID"].dtype == "int64"
    assert out["pickup_datetime"].dtype == "datetime64[us]"
    assert 0.85 * published[path.name] < len(out) <= published[path.name]


def test_schema_drift_is_real(settings):
    """The mirror's location IDs change from int64 to int32 in 2023-02; both prepare alike."""
    a = pq.read_schema(tlc.download(settings, "green", "2023-01")).field("PULocationID").type
    b = pq.read_schema(tlc.download(settings, "green", "2023-02")).field("PULocationID").type
    assert (str(a), str(b)) == ("int64", "int32")


def test_course_row_count(settings, mirror_path):
    """The course notebook keeps 73,908 rides of green 2021-01 after its 1-60 minute filter;
    the serving rules (`duration.core.rules`) drop 62 more when the month is prepared."""
    raw = mirror_path / "trip-data" / "green_tripdata_2021-01.parquet"
    assert len(prepare.read_rides(raw)) == 73908
    assert len(prepare.load_processed(settings, "green", "2021-01")) == 73846


def test_zone_table(settings):
    zones = tlc.read_zones(tlc.download_zones(settings))
    assert len(zones) == 265
    assert tlc.zone_map(zones)[132] == "Queens"  # JFK Airport
