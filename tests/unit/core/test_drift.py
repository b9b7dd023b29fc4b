"""Drift, data quality and the verdict (`core.drift`) on synthetic rides: no server, no mirror."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from duration.core import drift
from duration.data import reference
from duration.ops.monitor import thresholds
from duration.settings import Monitor
from tests.unit.conftest import synthetic_rides


def profile_of(df: pd.DataFrame) -> reference.Profile:
    return reference.build(df, reference.sample(df, 5000), df["duration"][:5000], {})


def test_the_same_distribution_does_not_drift_and_a_scaled_one_does():
    ref = reference.inputs(synthetic_rides(20_000, 1))
    columns = (reference.NUMERIC, reference.CATEGORICAL)
    same = drift.drift_table(ref, reference.inputs(synthetic_rides(20_000, 2)), *columns, 0.1)
    moved = drift.drift_table(ref, reference.inputs(synthetic_rides(20_000, 2, 1.5)), *columns, 0.1)
    assert not same["drifted"].any(), same
    assert moved.set_index("column")["drifted"].to_dict() == {
        c: c == "trip_distance" for c in reference.NUMERIC + reference.CATEGORICAL
    }


def test_categorical_drift_counts_missing_as_a_category():
    a = pd.Series([1.0] * 50 + [np.nan] * 50)
    b = pd.Series([1.0] * 95 + [np.nan] * 5)
    assert drift.column_drift(a, a, categorical=True) == 0
    assert 0.3 < drift.column_drift(a, b, categorical=True) < 1


def test_data_quality_counts_unseen_zones_and_out_of_range_values():
    df = synthetic_rides(2000, 3)
    p = profile_of(df)
    cur = reference.inputs(df).copy()
    cur.loc[:99, "PULocationID"] = 999  # a zone the training month never had
    cur.loc[100:149, "trip_distance"] = 1e6
    q = drift.data_quality(cur, p.meta["ranges"], p.meta["zones"])
    assert q["unseen_zone_share"] == pytest.approx(100 / 2000)
    assert 50 / 2000 <= q["out_of_range_share"] < 60 / 2000  # plus the 0.1% tails
    assert q["missing_share"] == pytest.approx(cur.isna().to_numpy().mean())


@pytest.mark.parametrize(
    ("ratio", "share", "pred", "expected"),
    [
        (1.0, 0.0, 0.0, "ok"),
        (1.0, 0.6, 0.0, "drift"),
        (1.0, 0.0, 0.2, "drift"),
        (1.2, 0.6, 0.2, "degraded"),
    ],
)
def test_verdicts_with_the_default_thresholds(ratio, share, pred, expected):
    assert drift.verdict(ratio, share, pred, thresholds(Monitor())) == expected
