"""Download and verification of TLC files, on a tiny file:// site built in a fixture."""

from __future__ import annotations

import pytest

from duration.data import tlc
from duration.errors import DurationError


def test_download_verifies_and_caches(site):
    path = tlc.download(site, "green", "2021-01")
    assert tlc.verify_parquet(path) == 6
    mtime = path.stat().st_mtime_ns
    assert tlc.download(site, "green", "2021-01").stat().st_mtime_ns == mtime  # skipped


def test_download_refetches_a_corrupt_cached_copy(site):
    path = tlc.download(site, "green", "2021-01")
    path.write_bytes(b"garbage")
    assert tlc.verify_parquet(tlc.download(site, "green", "2021-01")) == 6


def test_truncated_download_is_refused_and_leaves_nothing(site):
    with pytest.raises(DurationError, match="not a readable parquet"):
        tlc.download(site, "green", "2021-02")
    assert list(site.paths.raw.glob("green_tripdata_2021-02*")) == []
    assert list(site.paths.raw.glob(".*part")) == []


def test_row_count_must_match_the_published_count(site):
    with pytest.raises(DurationError, match="the TLC publishes 999"):
        tlc.download(site, "green", "2021-03")
    assert not tlc.raw_path(site, "green", "2021-03").exists()


def test_missing_month_names_month_and_base(site):
    with pytest.raises(DurationError, match="green 2020-05 is not available at file://"):
        tlc.download(site, "green", "2020-05")
