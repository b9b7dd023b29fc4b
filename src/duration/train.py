"""Train one estimator on a vectorized month and log everything to one MLflow run."""

from __future__ import annotations

from dataclasses import dataclass

from duration import estimators, model, plots, tracking
from duration.config import EXPERIMENT, ModelKind
from duration.matrices import Inputs

TREES = {ModelKind.random_forest, ModelKind.xgboost}  # fitted on a sample under a budget


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


def train_run(
    inp: Inputs,
    kind: ModelKind | str,
    params: dict | None = None,
    seed: int = 42,
    experiment: str = EXPERIMENT,
    budget_rows: int = 0,
) -> TrainResult:
    """Train one model in its own MLflow run; the run ends FAILED if anything raises.

    A tree model (forest, xgboost) fits on a seeded sample of at most `budget_rows` rides
    (0: every ride), and xgboost stops early on as many validation rides; it is scored on
    the whole validation month either way.
    """
    import mlflow

    kind = ModelKind(kind)
    tr, va = inp.tr, inp.va
    if kind in TREES:
        tr = estimators.sample(inp.tr, budget_rows, seed)
        va = estimators.sample(inp.va, budget_rows, seed + 1)
    with tracking.active_run(
        experiment_id=tracking.experiment_id(experiment),
        run_name=f"{kind.value}-{inp.features.value}",
        tags=tracking.run_tags(inp, kind),
    ) as run:
        est = estimators.fit(kind, tr, va, params, seed)
        mlflow.log_params(
            {
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
        )
        pred_va = est.predict(inp.va.X)
        s_tr = tracking.scores(tr.y, est.predict(tr.X))
        s_va = tracking.scores(inp.va.y, pred_va)
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
        tracking.log_data(run.info.run_id, inp)
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
            model_uri=model.log_fitted(inp, est),
            best_iteration=best_it,
        )
