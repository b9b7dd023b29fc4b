"""Fit one estimator on a vectorized month, score it, and log everything to one MLflow run."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, root_mean_squared_error

from duration import data, features, model, plots, tracking
from duration.config import EXPERIMENT, Color, FeatureSet, ModelKind, Settings
from duration.features import Split

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
# under it (unchanged), a yellow month (3M rides) would take tens of minutes without it.
FOREST_MAX_SAMPLES = 250_000


def round_cap(kind: ModelKind | str, max_rounds: int | None) -> dict | None:
    """Params that cap xgboost's boosting rounds (None when there is no cap to apply)."""
    if max_rounds and ModelKind(kind) is ModelKind.xgboost:
        return {"n_estimators": max_rounds}
    return None


def make_estimator(
    kind: ModelKind | str, params: dict | None = None, seed: int = 42, callbacks=None
):
    """A fresh, seeded estimator with the defaults overridden by `params`."""
    kind = ModelKind(kind)
    p = {**DEFAULTS[kind], **(params or {})}
    if kind is ModelKind.linear:
        from sklearn.linear_model import LinearRegression

        return LinearRegression(**p)
    if kind is ModelKind.lasso:
        from sklearn.linear_model import Lasso

        return Lasso(random_state=seed, **p)
    if kind is ModelKind.ridge:
        from sklearn.linear_model import Ridge

        return Ridge(random_state=seed, **p)
    if kind is ModelKind.random_forest:
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(random_state=seed, n_jobs=os.cpu_count(), **p)
    import xgboost as xgb

    return xgb.XGBRegressor(
        objective="reg:squarederror",
        tree_method="hist",
        eval_metric="rmse",
        early_stopping_rounds=EARLY_STOPPING,
        n_jobs=os.cpu_count(),
        random_state=seed,
        callbacks=callbacks,
        **p,
    )


def fit(
    kind: ModelKind | str,
    train: Split,
    val: Split,
    params: dict | None = None,
    seed: int = 42,
    callbacks: list | None = None,
):
    """Fit on the training month (xgboost stops early on the validation month)."""
    kind = ModelKind(kind)
    est = make_estimator(kind, params, seed, callbacks)
    forest = kind is ModelKind.random_forest
    if forest and est.max_samples is None and train.X.shape[0] > FOREST_MAX_SAMPLES:
        est.set_params(max_samples=FOREST_MAX_SAMPLES)
    if kind is ModelKind.xgboost:
        est.fit(train.X, train.y, eval_set=[(val.X, val.y)], verbose=False)
    elif kind in LINEAR:
        # float32 matrices (the `default` set) are solved in float64: sklearn's sparse solvers
        # lose accuracy in float32 (ridge: val RMSE 12.2 instead of 8.3 on a yellow month)
        est.fit(train.X.astype(np.float64, copy=False), train.y)
    else:
        est.fit(train.X, train.y)
    return est


def scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """RMSE and MAE in minutes."""
    return {
        "rmse": float(root_mean_squared_error(y, pred)),
        "mae": float(mean_absolute_error(y, pred)),
    }


@dataclass
class TrainResult:
    """What one training run produced."""

    run_id: str
    model: str
    features: str
    color: str
    train: str
    val: str
    val_rmse: float
    train_rmse: float
    val_mae: float
    model_uri: str
    best_iteration: int | None = None


def estimator_params(est) -> dict:
    """The estimator's own parameters, as logged."""
    skip = {"missing", "callbacks"}
    return {k: v for k, v in est.get_params().items() if v is not None and k not in skip}


def dataset(settings: Settings, color: Color | str, month: str):
    """An MLflow dataset for a prepared month: source URL, content digest and schema.

    The digest is the SHA-256 of the prepared file, read in chunks; the schema is inferred
    from its first rows. Nothing is held in memory, and MLflow never inspects the data
    value by value (its pandas dataset takes minutes at 3M rides).
    """
    import hashlib

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    path = data.processed_path(settings, color, month)
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return MetaDataset(
        source=resolve_dataset_source(data.trip_url(settings, color, month)),
        name=data.trip_file(color, month).removesuffix(".parquet"),
        digest=sha.hexdigest()[:16],
        schema=infer_signature(data.first_rows(path, 1000)).inputs,
    )


def experiment_id(name: str) -> str:
    """The id of the named experiment, created if missing."""
    import mlflow

    exp = mlflow.get_experiment_by_name(name)
    return exp.experiment_id if exp else mlflow.create_experiment(name)


def log_diagnostics(hours: np.ndarray, y: np.ndarray, pred: np.ndarray, label: str) -> None:
    """Log predicted-vs-actual, residuals and RMSE-by-hour figures to the active run."""
    plots.log_figure(
        plots.predicted_vs_actual(y, pred, f"{label}: predicted vs actual"),
        "plots/predicted_vs_actual.png",
    )
    plots.log_figure(plots.residuals(y, pred, f"{label}: residuals"), "plots/residuals.png")
    plots.log_figure(
        plots.rmse_by_hour(hours, y, pred, f"{label}: RMSE by pickup hour"),
        "plots/rmse_by_hour.png",
    )


@dataclass
class Inputs:
    """Everything a run needs, loaded once: matrices, rides, featurizer and vectorizer."""

    settings: Settings
    color: Color
    features: FeatureSet
    train: str
    val: str
    stage: Path
    tr: Split
    va: Split
    hours_va: np.ndarray  # pickup hour of each validation ride, for the RMSE-by-hour plot
    example: pd.DataFrame  # the first validation rides, for the model's input example
    featurizer: features.Featurizer
    dv: object


def _validation_extras(path: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Pickup hours and the first rides of the validation month (not the whole frame)."""
    pickup = pd.read_parquet(path, columns=["pickup_datetime"])["pickup_datetime"]
    return pickup.dt.hour.to_numpy(np.int8), data.first_rows(path, 5)


def load_inputs(
    settings: Settings, color: Color | str, fs: FeatureSet | str, train: str, val: str
) -> Inputs:
    """Load the vectorized months (or say which command makes them) and their rides."""
    color, fs = Color(color), FeatureSet(fs)
    stage = features.features_dir(settings, color, fs, train)
    tr = features.load_split(settings, color, fs, train, train)
    va = features.load_split(settings, color, fs, train, val)
    return Inputs(
        settings,
        color,
        fs,
        train,
        val,
        stage,
        tr,
        va,
        *_validation_extras(data.processed_path(settings, color, val)),
        features.load_featurizer(stage / "featurizer.json"),
        features.load_dv(stage),
    )


def run_tags(inp: Inputs, kind: ModelKind | str | None = None) -> dict[str, str]:
    """Tags every run carries: color, months, feature set, git commit (and model)."""
    tags = {
        "color": inp.color.value,
        "train_month": inp.train,
        "val_month": inp.val,
        "feature_set": inp.features.value,
        "git_commit": tracking.git_commit(),
    }
    if kind is not None:
        tags["model"] = ModelKind(kind).value
    return tags


def log_data(inp: Inputs) -> None:
    """Log the fitted DictVectorizer artifact and the input datasets (digests, no data)."""
    import mlflow

    mlflow.log_artifact(str(inp.stage / "preprocessor.b"), artifact_path="preprocessor")
    mlflow.log_input(dataset(inp.settings, inp.color, inp.train), context="training")
    mlflow.log_input(dataset(inp.settings, inp.color, inp.val), context="validation")


def log_fitted_model(inp: Inputs, est) -> str:
    """Log the self-contained model (featurizer + DictVectorizer + estimator); return its URI."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        info = model.log_model(
            inp.stage / "featurizer.json",
            inp.dv,
            est,
            model.input_example(inp.example, inp.featurizer, inp.color),
            model.signature(inp.featurizer, inp.color),
            Path(tmp),
        )
    mlflow.set_tag("model_uri", info.model_uri)
    return info.model_uri


def best_iteration(est) -> int | None:
    """xgboost's early-stopped best round (None for other estimators)."""
    return getattr(est, "best_iteration", None) if hasattr(est, "get_booster") else None


def train_run(
    settings: Settings,
    kind: ModelKind | str,
    fs: FeatureSet | str,
    color: Color | str,
    train: str,
    val: str,
    params: dict | None = None,
    seed: int = 42,
    experiment: str = EXPERIMENT,
    inputs: Inputs | None = None,
) -> TrainResult:
    """Train one model in its own MLflow run; the run ends FAILED if anything raises."""
    import mlflow

    kind = ModelKind(kind)
    inp = inputs or load_inputs(settings, color, fs, train, val)
    with mlflow.start_run(
        experiment_id=experiment_id(experiment),
        run_name=f"{kind.value}-{inp.features.value}",
        tags=run_tags(inp, kind),
    ) as run:
        est = fit(kind, inp.tr, inp.va, params, seed)
        mlflow.log_params(
            {
                "model": kind.value,
                "features": inp.features.value,
                "seed": seed,
                "n_train": inp.tr.X.shape[0],
                "n_val": inp.va.X.shape[0],
                "n_features": inp.tr.X.shape[1],
                **estimator_params(est),
            }
        )
        pred_tr, pred_va = est.predict(inp.tr.X), est.predict(inp.va.X)
        s_tr, s_va = scores(inp.tr.y, pred_tr), scores(inp.va.y, pred_va)
        metrics = {
            "val_rmse": s_va["rmse"],
            "val_mae": s_va["mae"],
            "train_rmse": s_tr["rmse"],
            "train_mae": s_tr["mae"],
        }
        best_it = best_iteration(est)
        if best_it is not None:
            metrics["best_iteration"] = best_it
        mlflow.log_metrics(metrics)
        log_data(inp)
        log_diagnostics(inp.hours_va, inp.va.y, pred_va, f"{kind.value} on {inp.color} {inp.val}")
        model_uri = log_fitted_model(inp, est)
        return TrainResult(
            run_id=run.info.run_id,
            model=kind.value,
            features=inp.features.value,
            color=inp.color.value,
            train=inp.train,
            val=inp.val,
            val_rmse=s_va["rmse"],
            train_rmse=s_tr["rmse"],
            val_mae=s_va["mae"],
            model_uri=model_uri,
            best_iteration=best_it,
        )
