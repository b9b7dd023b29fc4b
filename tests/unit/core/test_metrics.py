"""Scores and slices on synthetic rides."""

from __future__ import annotations

import numpy as np
import pandas as pd

from duration.core import metrics
from tests.unit.conftest import synthetic_rides


def test_slices_cover_every_ride_once_per_kind():
    df = synthetic_rides(3000, 4)
    table = metrics.slice_table(df, df["duration"].to_numpy() + 1.0, {41: "Manhattan"})
    assert (table.groupby("slice_by").rides.sum() == 3000).all()
    assert set(table[table.slice_by == "pickup_borough"].slice) == {"Manhattan", "Unknown"}
    assert np.allclose(table.rmse, 1.0) and np.allclose(table.mae, 1.0)


def test_compare_slices_puts_both_side_by_side_with_the_change():
    df = synthetic_rides(2000, 5)
    y = df["duration"].to_numpy()
    a = metrics.slice_table(df, y + 1.0, {41: "Manhattan"})
    b = metrics.slice_table(df, y + 2.0, {41: "Manhattan"})
    both = metrics.compare_slices(a, b)
    assert list(both.columns) == [
        "slice_by",
        "slice",
        "rides",
        "rmse_champion",
        "rmse_challenger",
        "change",
    ]
    assert np.allclose(both["change"], 1.0)  # twice the error everywhere: 100% worse
    assert (both["rides"] == a["rides"]).all()


def test_scores_are_rmse_and_mae():
    s = metrics.scores(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0]))
    assert s == {"rmse": float(np.sqrt(5 / 3)), "mae": 1.0}
    assert metrics.rmse(np.zeros(4), np.full(4, 2.0)) == 2.0
    assert isinstance(pd.Series(s).sum(), float)
