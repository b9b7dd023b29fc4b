"""Estimator construction on tiny synthetic matrices (no data files, no server)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from duration.data.matrices import Split
from duration.training import estimators


def _split(n: int, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    x = sp.csr_matrix(rng.uniform(0, 10, (n, 3)))
    return Split("2021-01", x, np.asarray(x[:, 0].todense()).ravel() * 2 + rng.normal(size=n))


def test_forest_samples_are_capped_only_above_the_cap(monkeypatch):
    monkeypatch.setattr(estimators, "FOREST_MAX_SAMPLES", 40)
    params = {"n_estimators": 3}
    small = estimators.fit("random_forest", _split(30), _split(10, 1), params)
    assert small.max_samples is None  # a month under the cap trains exactly as before
    large = estimators.fit("random_forest", _split(100), _split(10, 1), params)
    assert large.max_samples == 40
    assert estimators.estimator_params(large)["max_samples"] == 40  # and the run logs it
    chosen = estimators.fit(
        "random_forest", _split(100), _split(10, 1), {**params, "max_samples": 0.5}
    )
    assert chosen.max_samples == 0.5  # a value the user chose is kept


def test_linear_models_solve_float32_matrices_in_float64():
    tr, va = _split(200), _split(50, 1)
    tr32 = Split(tr.month, tr.X.astype(np.float32), tr.y)
    est = estimators.fit("ridge", tr32, va)
    ref = estimators.fit("ridge", Split(tr.month, tr32.X.astype(np.float64), tr.y), va)
    assert est.coef_.dtype == np.float64
    np.testing.assert_array_equal(est.coef_, ref.coef_)


def test_xgboost_on_prebuilt_matrices_is_the_estimators_own_fit():
    """The search's shared matrices train exactly the model XGBRegressor.fit trains."""
    tr, va = _split(400), _split(100, 1)
    params = {"n_estimators": 300, "max_depth": 3}
    ours = estimators.fit("xgboost", tr, va, params, seed=3)
    own = estimators.make_estimator("xgboost", params, seed=3)
    own.fit(tr.X, tr.y, eval_set=[(va.X, va.y)], verbose=False)
    assert ours.best_iteration == own.best_iteration < 299  # it stopped early, the same round
    np.testing.assert_array_equal(ours.predict(va.X), own.predict(va.X))
    shared = estimators.xgb_data(tr, va)  # built once, used twice: the same model both times
    again = estimators.fit("xgboost", tr, va, params, seed=3, data=shared)
    twice = estimators.fit("xgboost", tr, va, params, seed=3, data=shared)
    np.testing.assert_array_equal(again.predict(va.X), twice.predict(va.X))
    np.testing.assert_array_equal(again.predict(va.X), own.predict(va.X))


def test_a_sample_is_seeded_ordered_and_only_drawn_above_its_size():
    split = _split(50)
    assert estimators.sample(split, 50, 1) is split and estimators.sample(split, 0, 1) is split
    a, b = estimators.sample(split, 20, 1), estimators.sample(split, 20, 1)
    assert a.X.shape == (20, 3) and a.y.shape == (20,)
    np.testing.assert_array_equal(a.y, b.y)  # the same seed, the same rides
    rows = [int(np.flatnonzero(split.y == v)[0]) for v in a.y]
    assert rows == sorted(set(rows))  # distinct rides, in the month's order
    np.testing.assert_array_equal(a.X.toarray(), split.X[rows].toarray())
    assert not np.array_equal(estimators.sample(split, 20, 2).y, a.y)


def test_a_budget_samples_both_months_each_with_its_own_seed():
    tr, va = _split(50), _split(30)
    a, b = estimators.budget_splits(tr, va, 20, 7)
    np.testing.assert_array_equal(a.y, estimators.sample(tr, 20, 7).y)
    np.testing.assert_array_equal(b.y, estimators.sample(va, 20, 8).y)
    sampled, whole = estimators.budget_splits(tr, va, 40, 7)  # 30 validation rides: all kept
    assert sampled.X.shape[0] == 40 and whole is va
    assert [estimators.sample_size(50, r) for r in (0, 20, 50, 80)] == [50, 20, 50, 50]
