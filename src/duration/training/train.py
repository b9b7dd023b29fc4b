"""Train one estimator on a vectorized month and log everything to one MLflow run."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duration.core import model
from duration.core.metrics import scores
from duration.core.schema import ModelKind
from duration.data.matrices import Inputs
from duration.tracking import datasets, experiments, runs
from duration.tracking.names import EXPERIMENT
from duration.training import estimators, plots

TREES = {ModelKind.random_forest, ModelKind.xgboost}  # fitted on a sample under a budget


@dataclass(frozen=True, kw_only=True)
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


def _fit(
    inp: Inputs, kind: ModelKind, params: dict | None, seed: int, budget_rows: int
) -> tuple[Any, Any, Any]:
    """Fit `kind`: a tree model on a seeded sample of at most `budget_rows` rides (0: every
    ride), xgboost stopping early on as many validation rides. Returns the estimator and the
    training and validation rides it used."""
    tr, va = inp.tr, inp.va
    if kind in TREES:
        tr, va = estimators.budget_splits(inp.tr, inp.va, budget_rows, seed)
    return estimators.fit(kind, tr, va, params, seed), tr, va


def _params(
    inp: Inputs, kind: ModelKind, seed: int, budget_rows: int, est: Any, tr: Any, va: Any
) -> dict:
    """What the run logs as params: the setup, the rides used and the estimator's own."""
    return {
        "model": kind.value,
        "features": inp.features.value,
        "seed": seed,
        "n_train": tr.X.shape[0],  # the rides it was fitted on
        "n_val": inp.va.X.shape[0],
        "budget_rows": budget_rows,
        **({"n_val_early_stopping": va.X.shape[0]} if kind is ModelKind.xgboost else {}),
        "n_features": inp.tr.X.shape[1],
        **estimators.estimator_params(est),
    }


def train_run(
    inp: Inputs,
    kind: ModelKind | str,
    params: dict | None = None,
    seed: int = 42,
    experiment: str = EXPERIMENT,
    budget_rows: int = 0,
) -> TrainResult:
    """Train one model in its own MLflow run; the run ends FAILED if anything raises.

    A tree model fits on a sample under `budget_rows` (see `_fit`); every model is scored
    on the whole validation month.
    """
    import mlflow  # deferred: MLflow takes seconds to import

    kind = ModelKind(kind)
    with runs.active_run(
        experiment_id=experiments.experiment_id(experiment),
        run_name=f"{kind.value}-{inp.features.value}",
        tags=runs.run_tags(inp, kind),
    ) as run:
        est, tr, va = _fit(inp, kind, params, seed, budget_rows)
        mlflow.log_params(_params(inp, kind, seed, budget_rows, est, tr, va))
        pred_va = est.predict(inp.va.X)
        s_tr = scores(tr.y, est.predict(tr.X))
        s_va = scores(inp.va.y, pred_va)
        metrics = {
            "val_rmse": s_va["rmse"],
            "val_mae": s_va["mae"],
            "train_rmse": s_tr["rmse"],
            "train_mae": s_tr["mae"],
        }
        best_it = estimators.best_iteration(est)
        if best_it is not None:
            metrics["best_iteration"] = best_it
        mlflow.log_metrics(metrics)
        datasets.log_data(run.info.run_id, inp)
        label = f"{kind.value} on {inp.color} {inp.val}"
        plots.log_diagnostics(inp.hours_va, inp.va.y, pred_va, label)
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
            model_uri=log_fitted(inp, est),
            best_iteration=best_it,
        )


def log_fitted(inp: Inputs, estimator: Any) -> str:
    """Log the self-contained model of a fit on `inp` to the active run; return its URI."""
    import mlflow  # deferred: MLflow takes seconds to import

    with tempfile.TemporaryDirectory() as tmp:
        files = model.package(inp.stage / "featurizer.json", inp.dv, estimator, Path(tmp))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=files.python_model,
            artifacts=files.artifacts,
            code_paths=files.code_paths,
            signature=model.signature(inp.featurizer, inp.color),
            input_example=model.input_example(inp.example, inp.featurizer, inp.color),
            pip_requirements=model.requirements(),
        )
    mlflow.set_tag("model_uri", info.model_uri)
    return str(info.model_uri)
