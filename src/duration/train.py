"""Train one estimator on a vectorized month and log everything to one MLflow run."""

from __future__ import annotations

from dataclasses import dataclass

from duration import estimators, model, plots, tracking
from duration.config import EXPERIMENT, ModelKind
from duration.matrices import Inputs


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
) -> TrainResult:
    """Train one model in its own MLflow run; the run ends FAILED if anything raises."""
    import mlflow

    kind = ModelKind(kind)
    with tracking.active_run(
        experiment_id=tracking.experiment_id(experiment),
        run_name=f"{kind.value}-{inp.features.value}",
        tags=tracking.run_tags(inp, kind),
    ) as run:
        est = estimators.fit(kind, inp.tr, inp.va, params, seed)
        mlflow.log_params(
            {
                "model": kind.value,
                "features": inp.features.value,
                "seed": seed,
                "n_train": inp.tr.X.shape[0],
                "n_val": inp.va.X.shape[0],
                "n_features": inp.tr.X.shape[1],
                **estimators.estimator_params(est),
            }
        )
        pred_va = est.predict(inp.va.X)
        s_tr = tracking.scores(inp.tr.y, est.predict(inp.tr.X))
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
