"""The monitoring statistics on synthetic rides: no server, no mirror."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from duration import monitor, reference
from duration.config import Settings
from duration.errors import DurationError


def rides(n: int, seed: int, distance_scale: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 31 * 86400, n), "s")
    distance = rng.gamma(2.0, 1.5, n) * distance_scale
    return pd.DataFrame({
        "pickup_datetime": start,
        "PULocationID": rng.choice([41, 74, 75, 166], n),
        "DOLocationID": rng.choice([41, 42, 74, 75, 236], n),
        "trip_distance": distance,
        "VendorID": rng.choice([1.0, 2.0], n),
        "RatecodeID": np.where(rng.random(n) < 0.5, 1.0, np.nan),
        "trip_type": 1.0,
        "passenger_count": rng.choice([1.0, 2.0, np.nan], n),
        "duration": 4 * distance + rng.normal(0, 2, n),
    })  # fmt: skip


def profile_of(df: pd.DataFrame) -> reference.Profile:
    return reference.build(df, reference.sample(df, 5000), df["duration"][:5000], {})


def test_the_same_distribution_does_not_drift_and_a_scaled_one_does():
    ref = reference.inputs(rides(20_000, 1))
    same = monitor.drift_table(ref, reference.inputs(rides(20_000, 2)), 0.1)
    moved = monitor.drift_table(ref, reference.inputs(rides(20_000, 2, 1.5)), 0.1)
    assert not same["drifted"].any(), same
    assert moved.set_index("column")["drifted"].to_dict() == {
        c: c == "trip_distance" for c in reference.NUMERIC + reference.CATEGORICAL
    }


def test_categorical_drift_counts_missing_as_a_category():
    a = pd.Series([1.0] * 50 + [np.nan] * 50)
    b = pd.Series([1.0] * 95 + [np.nan] * 5)
    assert monitor.column_drift(a, a, categorical=True) == 0
    assert 0.3 < monitor.column_drift(a, b, categorical=True) < 1


def test_data_quality_counts_unseen_zones_and_out_of_range_values():
    df = rides(2000, 3)
    p = profile_of(df)
    cur = reference.inputs(df).copy()
    cur.loc[:99, "PULocationID"] = 999  # a zone the training month never had
    cur.loc[100:149, "trip_distance"] = 1e6
    q = monitor.data_quality(p, cur)
    assert q["unseen_zone_share"] == pytest.approx(100 / 2000)
    assert 50 / 2000 <= q["out_of_range_share"] < 60 / 2000  # plus the 0.1% tails
    assert q["missing_share"] == pytest.approx(cur.isna().to_numpy().mean())


def test_slices_cover_every_ride_once_per_kind():
    df = rides(3000, 4)
    table = monitor.slice_table(df, df["duration"].to_numpy() + 1.0, {41: "Manhattan"})
    assert (table.groupby("slice_by").rides.sum() == 3000).all()
    assert set(table[table.slice_by == "pickup_borough"].slice) == {"Manhattan", "Unknown"}
    assert np.allclose(table.rmse, 1.0) and np.allclose(table.mae, 1.0)


@pytest.mark.parametrize(
    "ratio, share, pred, expected",
    [(1.0, 0.0, 0.0, "ok"), (1.0, 0.6, 0.0, "drift"), (1.0, 0.0, 0.2, "drift"),
     (1.2, 0.6, 0.2, "degraded")],
)  # fmt: skip
def test_verdicts(ratio, share, pred, expected):
    assert monitor.verdict(ratio, share, pred, Settings()) == expected


def test_months():
    assert monitor.months("2021-11", "2022-02") == ["2021-11", "2021-12", "2022-01", "2022-02"]
    assert monitor.months("2022-02", "2021-11") == []
    assert monitor.months_between("2021-01", "2022-03") == 14


@pytest.mark.parametrize(
    "env, value, needle",
    [("DURATION_DRIFT_SHARE", "0", "out of range"), ("DURATION_RMSE_RATIO", "11", "out of range"),
     ("DURATION_DRIFT_THRESHOLD", "high", "not a number")],
)  # fmt: skip
def test_thresholds_out_of_range_are_one_line(monkeypatch, env, value, needle):
    monkeypatch.setenv(env, value)
    with pytest.raises(DurationError, match=f"{env}.*{needle}"):
        Settings.from_env()


def test_thresholds_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("DURATION_RMSE_RATIO", "1.3")
    assert Settings.from_env().rmse_ratio == 1.3
    assert Settings.from_env(rmse_ratio=1.5).rmse_ratio == 1.5  # a flag wins
