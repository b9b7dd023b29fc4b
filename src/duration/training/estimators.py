"""Estimators: untuned defaults per model kind, construction, and fitting on a vectorized month."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from duration.core.schema import ModelKind
from duration.data.matrices import Split
from duration.training.config import check_rounds

# Untuned defaults per model. xgboost stops early on the validation month.
DEFAULTS: dict[ModelKind, dict] = {
    ModelKind.linear: {},
    ModelKind.lasso: {"alpha": 0.01},
    ModelKind.ridge: {"alpha": 1.0},
    # Sparse input makes forests slow: these keep a fit near 10 s on one green month.
    ModelKind.random_forest: {
        "n_estimators": 30,
        "max_depth": 15,
        "min_samples_leaf": 3,
        "max_features": 0.3,
    },
    ModelKind.xgboost: {
        "learning_rate": 0.1,
        "max_depth": 10,
        "min_child_weight": 5.0,
        "subsample": 0.9,
        "colsample_bytree": 0.9,
        "reg_lambda": 1.0,
        "reg_alpha": 0.0,
        "n_estimators": 1000,
    },
}
EARLY_STOPPING = 20
LINEAR = {ModelKind.linear, ModelKind.lasso, ModelKind.ridge}
# Each forest tree sees a bootstrap sample of at most this many rides: a green month is
# under it (unchanged); at yellow scale a tree costs about what a green month's does.
FOREST_MAX_SAMPLES = 100_000
# xgboost's histogram bins, fixed so that one training matrix serves every trial.
MAX_BIN = 256


def round_cap(kind: ModelKind | str, max_rounds: int | None) -> dict | None:
    """Params that cap xgboost's boosting rounds (None when there is no cap to apply)."""
    check_rounds(max_rounds)
    if max_rounds and ModelKind(kind) is ModelKind.xgboost:
        return {"n_estimators": max_rounds}
    return None


def make_estimator(
    kind: ModelKind | str,
    params: dict | None = None,
    seed: int = 42,
    callbacks: list | None = None,
    n_jobs: int | None = None,
) -> Any:
    """A fresh, seeded estimator with the defaults overridden by `params`.

    `n_jobs` is the cores it may use (default: all of this machine's; a Spark task passes its
    own share).
    """
    kind = ModelKind(kind)
    n_jobs = n_jobs or os.cpu_count()
    p = {**DEFAULTS[kind], **(params or {})}
    # deferred, each below: scikit-learn and xgboost load only for the kind that is fitted
    if kind is ModelKind.linear:
        from sklearn.linear_model import LinearRegression  # deferred: as above

        return LinearRegression(**p)
    if kind is ModelKind.lasso:
        from sklearn.linear_model import Lasso  # deferred: as above

        return Lasso(random_state=seed, **p)
    if kind is ModelKind.ridge:
        from sklearn.linear_model import Ridge  # deferred: as above

        return Ridge(random_state=seed, **p)
    if kind is ModelKind.random_forest:
        from sklearn.ensemble import RandomForestRegressor  # deferred: as above

        return RandomForestRegressor(random_state=seed, n_jobs=n_jobs, **p)
    import xgboost as xgb  # deferred: as above

    return xgb.XGBRegressor(
        objective="reg:squarederror",
        tree_method="hist",
        eval_metric="rmse",
        early_stopping_rounds=EARLY_STOPPING,
        n_jobs=n_jobs,
        random_state=seed,
        callbacks=callbacks,
        **p,
    )


def sample_size(n: int, rows: int) -> int:
    """How many of `n` rides a sample of at most `rows` keeps (`rows` 0: every ride)."""
    return n if not rows or n <= rows else rows


def sample(split: Split, rows: int, seed: int) -> Split:
    """At most `rows` of the split's rides, drawn without replacement (seeded), in order.

    The split itself when it has no more rides than that (or `rows` is 0: every ride).
    """
    n = split.X.shape[0]
    if sample_size(n, rows) == n:
        return split
    idx = np.sort(np.random.default_rng(seed).choice(n, rows, replace=False))
    return Split(split.month, split.X[idx], split.y[idx])


def budget_splits(train: Split, val: Split, rows: int, seed: int) -> tuple[Split, Split]:
    """The rides a fit on a budget uses: at most `rows` training rides, and as many
    validation rides to stop early on (each drawn with its own seed)."""
    return sample(train, rows, seed), sample(val, rows, seed + 1)


def xgb_data(train: Split, val: Split) -> tuple:
    """xgboost's matrices for a training and a validation month, built once per search.

    Training: a QuantileDMatrix (binned once, MAX_BIN bins). Validation: a plain DMatrix,
    which xgboost scores incrementally each round; a QuantileDMatrix there cost 2.5 times the
    round's time at 3M rides (xgboost 3.2, measured: 2.9 s against 1.2 s a round).
    """
    import xgboost as xgb  # deferred: xgboost loads only to fit

    return (
        xgb.QuantileDMatrix(train.X, train.y, max_bin=MAX_BIN),
        xgb.DMatrix(val.X, val.y),
    )


def _fit_xgboost(est: Any, data: tuple) -> Any:
    """Train `est` (an unfitted XGBRegressor) on prebuilt matrices, as its own fit would:
    the same parameters, rounds, early stopping on the validation matrix and callbacks."""
    import xgboost as xgb  # deferred: xgboost loads only to fit

    dtrain, dval = data
    booster = xgb.train(
        {**est.get_xgb_params(), "max_bin": MAX_BIN},
        dtrain,
        est.get_num_boosting_rounds(),
        evals=[(dval, "validation_0")],
        early_stopping_rounds=est.early_stopping_rounds,
        verbose_eval=False,
        callbacks=est.callbacks,
    )
    est.load_model(booster.save_raw("ubj"))  # the estimator now holds this booster
    return est


def fit(
    kind: ModelKind | str,
    train: Split,
    val: Split,
    params: dict | None = None,
    seed: int = 42,
    callbacks: list | None = None,
    n_jobs: int | None = None,
    data: tuple | None = None,
) -> Any:
    """Fit on the training month (xgboost stops early on the validation month).

    `data` is xgboost's prebuilt (training, validation) matrices of these splits, when a
    search shares them between trials (see `xgb_data`).
    """
    kind = ModelKind(kind)
    est = make_estimator(kind, params, seed, callbacks, n_jobs)
    forest = kind is ModelKind.random_forest
    if forest and est.max_samples is None and train.X.shape[0] > FOREST_MAX_SAMPLES:
        est.set_params(max_samples=FOREST_MAX_SAMPLES)
    if kind is ModelKind.xgboost:
        _fit_xgboost(est, data or xgb_data(train, val))
    elif kind in LINEAR:
        # float32 matrices (the `default` set) are solved in float64: sklearn's sparse solvers
        # lose accuracy in float32 (ridge: val RMSE 12.2 instead of 8.3 on a yellow month)
        est.fit(train.X.astype(np.float64, copy=False), train.y)
    else:
        est.fit(train.X, train.y)
    return est


def estimator_params(est: Any) -> dict:
    """The estimator's own parameters, as logged."""
    skip = {"missing", "callbacks"}
    return {k: v for k, v in est.get_params().items() if v is not None and k not in skip}


def best_iteration(est: Any) -> int | None:
    """xgboost's early-stopped best round (None for other estimators)."""
    return getattr(est, "best_iteration", None) if hasattr(est, "get_booster") else None
