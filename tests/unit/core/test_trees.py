"""The forest walk answers xgboost's own bits, and steps aside for what it does not cover."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st

from duration.core import trees


def _data(seed: int, n: int = 600, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k)).astype(np.float32)
    x[rng.random(x.shape) < 0.15] = np.nan  # missing values take each node's default way
    x[:, 0] = np.round(x[:, 0])  # ties with the thresholds
    y = np.nan_to_num(x[:, 0]) * 3 + np.nan_to_num(x[:, 1]) ** 2 + rng.normal(size=n)
    return x, y


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    depth=st.integers(1, 9),
    rounds=st.integers(1, 60),
    base=st.one_of(st.none(), st.floats(-50, 50)),
    rows=st.integers(1, 30),
)
def test_the_walk_gives_xgboosts_bits(seed, depth, rounds, base, rows):
    x, y = _data(seed)
    params = {"max_depth": depth, "nthread": 1, "seed": seed}
    if base is not None:
        params["base_score"] = base
    booster = xgb.train(params, xgb.DMatrix(x, y), rounds)
    use = int(np.random.default_rng(seed).integers(1, rounds + 1))
    forest = trees.from_xgboost(booster, use)
    assert forest is not None
    fresh, _ = _data(seed + 1, n=rows)
    expected = booster.inplace_predict(fresh, iteration_range=(0, use))
    np.testing.assert_array_equal(forest.predict(fresh), expected)


def test_a_model_it_does_not_cover_is_none():
    x, y = _data(0)
    linear = xgb.train({"booster": "gblinear", "nthread": 1}, xgb.DMatrix(x, y), 5)
    assert trees.from_xgboost(linear) is None
    two = np.column_stack([y, -y])
    multi = xgb.train({"nthread": 1, "multi_strategy": "multi_output_tree"}, xgb.DMatrix(x, two), 5)
    assert trees.from_xgboost(multi) is None
    # a link function (gamma: exp of the margin) would not give the same bits: the probe
    # rows catch it, whatever the model's layout
    gamma = xgb.train({"objective": "reg:gamma", "nthread": 1}, xgb.DMatrix(x, np.abs(y) + 1), 5)
    assert trees.from_xgboost(gamma) is None


@pytest.mark.parametrize("rows", [1, 3, 50])
def test_more_rows_than_probed_and_unknown_features(rows):
    x, y = _data(5)
    booster = xgb.train({"max_depth": 6, "nthread": 1}, xgb.DMatrix(x, y), 30)
    forest = trees.from_xgboost(booster)
    assert forest is not None and forest.depth <= 6 and len(forest.roots) == 30
    fresh = np.full((rows, x.shape[1]), np.nan, dtype=np.float32)  # nothing known
    np.testing.assert_array_equal(forest.predict(fresh), booster.inplace_predict(fresh))
