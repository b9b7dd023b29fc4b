"""Fit one estimator on a vectorized month, score it, and log everything to one MLflow run."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
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
    ModelKind.random_forest: {"n_estimators": 50, "max_depth": 20, "min_samples_leaf": 2},
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
EARLY_STOPPING = 50


def make_estimator(kind: ModelKind | str, params: dict | None = None, seed: int = 42):
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
        **p,
    )


def fit(kind: ModelKind | str, train: Split, val: Split, params: dict | None = None, seed=42):
    """Fit on the training month (xgboost stops early on the validation month)."""
    est = make_estimator(kind, params, seed)
    if ModelKind(kind) is ModelKind.xgboost:
        est.fit(train.X, train.y, eval_set=[(val.X, val.y)], verbose=False)
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

    def to_dict(self) -> dict:
        return asdict(self)


def estimator_params(est) -> dict:
    """The estimator's own parameters, as logged."""
    return {k: v for k, v in est.get_params().items() if v is not None and k != "missing"}


def dataset(settings: Settings, color: Color | str, month: str, rides: pd.DataFrame):
    """An MLflow dataset (digest, schema, source URL) for a prepared month; no data copied."""
    import mlflow

    return mlflow.data.from_pandas(
        rides,
        source=data.trip_url(settings, color, month),
        name=data.trip_file(color, month).removesuffix(".parquet"),
        targets="duration",
    )


def experiment_id(name: str) -> str:
    """The id of the named experiment, created if missing."""
    import mlflow

    exp = mlflow.get_experiment_by_name(name)
    return exp.experiment_id if exp else mlflow.create_experiment(name)


def log_diagnostics(rides: pd.DataFrame, y: np.ndarray, pred: np.ndarray, label: str) -> None:
    """Log predicted-vs-actual, residuals and RMSE-by-hour figures to the active run."""
    plots.log_figure(plots.predicted_vs_actual(y, pred, f"{label}: predicted vs actual"),
                     "plots/predicted_vs_actual.png")
    plots.log_figure(plots.residuals(y, pred, f"{label}: residuals"), "plots/residuals.png")
    plots.log_figure(
        plots.rmse_by_hour(rides["pickup_datetime"].dt.hour.to_numpy(), y, pred,
                           f"{label}: RMSE by pickup hour"),
        "plots/rmse_by_hour.png",
    )


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
    tags: dict | None = None,
    nested: bool = False,
    with_model: bool = True,
    with_plots: bool = True,
) -> TrainResult:
    """Train one model in its own MLflow run; the run ends FAILED if anything raises."""
    import mlflow

    kind, fs, color = ModelKind(kind), FeatureSet(fs), Color(color)
    stage = features.features_dir(settings, color, fs, train)
    tr = features.load_split(settings, color, fs, train, train)
    va = features.load_split(settings, color, fs, train, val)
    run_tags = {
        "model": kind.value,
        "color": color.value,
        "train_month": train,
        "val_month": val,
        "feature_set": fs.value,
        "git_commit": tracking.git_commit(),
        **(tags or {}),
    }
    with mlflow.start_run(
        experiment_id=None if nested else experiment_id(experiment),
        run_name=f"{kind.value}-{fs.value}",
        nested=nested,
        tags=run_tags,
    ) as run:
        est = fit(kind, tr, va, params, seed)
        mlflow.log_params(
            {
                "model": kind.value,
                "features": fs.value,
                "seed": seed,
                "n_train": tr.X.shape[0],
                "n_val": va.X.shape[0],
                "n_features": tr.X.shape[1],
                **estimator_params(est),
            }
        )
        pred_tr, pred_va = est.predict(tr.X), est.predict(va.X)
        s_tr, s_va = scores(tr.y, pred_tr), scores(va.y, pred_va)
        best_it = getattr(est, "best_iteration", None) if kind is ModelKind.xgboost else None
        metrics = {
            "val_rmse": s_va["rmse"],
            "val_mae": s_va["mae"],
            "train_rmse": s_tr["rmse"],
            "train_mae": s_tr["mae"],
        }
        if best_it is not None:
            metrics["best_iteration"] = best_it
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(stage / "preprocessor.b"), artifact_path="preprocessor")
        rides_tr = pd.read_parquet(data.processed_path(settings, color, train))
        rides_va = pd.read_parquet(data.processed_path(settings, color, val))
        mlflow.log_input(dataset(settings, color, train, rides_tr), context="training")
        mlflow.log_input(dataset(settings, color, val, rides_va), context="validation")
        if with_plots:
            log_diagnostics(rides_va, va.y, pred_va, f"{kind.value} on {color.value} {val}")
        model_uri = ""
        if with_model:
            featurizer = features.load_featurizer(stage / "featurizer.json")
            with tempfile.TemporaryDirectory() as tmp:
                info = model.log_model(
                    stage / "featurizer.json",
                    features.load_dv(stage),
                    est,
                    model.input_example(rides_va, featurizer, color),
                    model.signature(featurizer, color),
                    Path(tmp),
                )
            model_uri = info.model_uri
            mlflow.set_tag("model_uri", model_uri)
        return TrainResult(
            run_id=run.info.run_id,
            model=kind.value,
            features=fs.value,
            color=color.value,
            train=train,
            val=val,
            val_rmse=s_va["rmse"],
            train_rmse=s_tr["rmse"],
            val_mae=s_va["mae"],
            model_uri=model_uri,
            best_iteration=best_it,
        )
