"""Hyperparameter search with hyperopt's TPE: one parent run, one nested child run per trial."""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from duration import plots, train
from duration.config import SEARCH_EXPERIMENT, ModelKind
from duration.errors import DurationError

# The search space of each model, declared once: name -> (distribution, low, high[, step]).
# "log" draws log-uniformly; "int" draws integers low..high in steps.
SPACES: dict[ModelKind, dict[str, tuple]] = {
    ModelKind.xgboost: {
        "max_depth": ("int", 4, 12, 1),
        "learning_rate": ("log", 0.08, 0.4),
        "min_child_weight": ("log", 0.5, 50.0),
        "subsample": ("uniform", 0.6, 1.0),
        "colsample_bytree": ("uniform", 0.5, 1.0),
        "reg_alpha": ("log", 1e-3, 10.0),
        "reg_lambda": ("log", 1e-3, 10.0),
    },
    ModelKind.random_forest: {
        "n_estimators": ("int", 20, 60, 10),
        "max_depth": ("int", 8, 20, 1),
        "min_samples_leaf": ("int", 1, 10, 1),
        "max_features": ("uniform", 0.2, 0.6),
    },
}
TOP_N = 5  # trials that enter the best TOP_N so far log their model, so `register` can use them


class SearchStopped(BaseException):
    """Raised inside a trial when the search is interrupted or times out.

    A BaseException, like KeyboardInterrupt, so no library's `except Exception` swallows it.
    """


def space(kind: ModelKind | str) -> dict:
    """The hyperopt space built from the declaration in SPACES."""
    from hyperopt import hp
    from hyperopt.pyll import scope

    kind = ModelKind(kind)
    if kind not in SPACES:
        raise DurationError(
            f"--model {kind.value} has no search space: tune one of {[k.value for k in SPACES]}"
        )
    out = {}
    for name, (dist, low, high, *step) in SPACES[kind].items():
        if dist == "int":
            out[name] = scope.int(hp.quniform(name, low, high, step[0]))
        elif dist == "log":
            out[name] = hp.loguniform(name, math.log(low), math.log(high))
        else:
            out[name] = hp.uniform(name, low, high)
    return out


@dataclass
class SearchResult:
    """What a search produced."""

    parent_run_id: str
    model: str
    features: str
    trials: int
    completed: int
    best_val_rmse: float
    best_params: dict
    best_run_id: str
    status: str
    wall_s: float
    seconds_per_trial: float
    stopped: str = ""
    history: list[float] = field(default_factory=list)


_stop_requested: list[int] = []


def _check_stop() -> None:
    if _stop_requested:
        raise SearchStopped("timeout" if _stop_requested[0] == signal.SIGALRM else "interrupted")


def _stop_callback():
    """An xgboost callback that ends training at the next round once a stop is requested."""
    import xgboost as xgb

    class StopOnSignal(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            return bool(_stop_requested)

    return StopOnSignal()


@contextmanager
def _stop_signals(timeout: float | None) -> Iterator[None]:
    """Record Ctrl-C and the timeout; the trial stops at its next boosting round."""

    def stop(signum, _frame):
        if _stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        _stop_requested.append(signum)

    _stop_requested.clear()

    old_int = signal.signal(signal.SIGINT, stop)
    old_alrm = signal.signal(signal.SIGALRM, stop)
    if timeout:
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGALRM, old_alrm)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="search", unit="trial", disable=not enabled, leave=True)


def search(
    inp: train.Inputs,
    kind: ModelKind | str = ModelKind.xgboost,
    trials: int = 30,
    seed: int = 42,
    timeout: float | None = None,
    max_rounds: int | None = None,
    progress: bool = True,
) -> SearchResult:
    """Run a TPE search; every trial is a nested run. Stops cleanly on Ctrl-C or timeout."""
    import mlflow
    from hyperopt import STATUS_OK, Trials, fmin, space_eval, tpe
    from mlflow.tracking import MlflowClient
    from tqdm.contrib.logging import logging_redirect_tqdm

    kind = ModelKind(kind)
    if trials < 1:
        raise DurationError(f"--trials {trials}: the search needs at least 1 trial")
    sp = space(kind)
    fixed = train.round_cap(kind, max_rounds) or {}
    client = MlflowClient()
    history: list[tuple[float, str, dict]] = []  # (val_rmse, run_id, params)
    start = time.monotonic()

    def objective(raw: dict) -> dict:
        params = {**space_eval(sp, raw), **fixed}
        n = len(history) + 1
        _check_stop()
        child = mlflow.start_run(
            experiment_id=parent.info.experiment_id, run_name=f"trial-{n:03d}", nested=True
        )
        try:
            rmse = _trial(params, n)
        except SearchStopped:
            mlflow.end_run(status="KILLED")
            raise
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise
        mlflow.end_run()
        history.append((rmse, child.info.run_id, params))
        bar.update(1)
        bar.set_postfix(best_rmse=f"{min(h[0] for h in history):.4f}")
        return {"loss": rmse, "status": STATUS_OK}

    def _trial(params: dict, n: int) -> float:
        mlflow.set_tags({**train.run_tags(inp, kind), "trial": str(n)})
        mlflow.log_params({**params, "seed": seed})
        callbacks = [_stop_callback()] if kind is ModelKind.xgboost else None
        est = train.fit(kind, inp.tr, inp.va, params, seed, callbacks=callbacks)
        _check_stop()  # a stopped trial is not scored: it ends KILLED
        pred = est.predict(inp.va.X)
        s = train.scores(inp.va.y, pred)
        metrics = {"val_rmse": s["rmse"], "val_mae": s["mae"]}
        if (best_it := train.best_iteration(est)) is not None:
            metrics["best_iteration"] = best_it
        mlflow.log_metrics(metrics)
        ranked = sorted(h[0] for h in history)
        if len(ranked) < TOP_N or s["rmse"] < ranked[TOP_N - 1]:
            train.log_fitted_model(inp, est)
            train.log_diagnostics(inp.hours_va, inp.va.y, pred, f"{kind.value} trial {n}")
        return s["rmse"]

    status, stopped = "FINISHED", ""
    with (
        mlflow.start_run(
            experiment_id=train.experiment_id(SEARCH_EXPERIMENT),
            run_name=f"search-{kind.value}-{inp.features.value}",
            tags={**train.run_tags(inp, kind), "search": "hyperopt-tpe"},
        ) as parent,
        _progress(trials, progress) as bar,
        logging_redirect_tqdm(),
    ):
        mlflow.log_params(
            {"model": kind.value, "features": inp.features.value, "seed": seed, "trials": trials}
        )
        mlflow.log_dict({k: list(v) for k, v in SPACES[kind].items()}, "search_space.json")
        mlflow.log_param("search_space", json.dumps(SPACES[kind])[:6000])
        train.log_data(inp)
        try:
            with _stop_signals(timeout):
                fmin(
                    objective,
                    sp,
                    algo=tpe.suggest,
                    max_evals=trials,
                    trials=Trials(),
                    rstate=np.random.default_rng(seed),
                    show_progressbar=False,
                )
        except SearchStopped as e:  # the in-flight trial has already ended KILLED
            status, stopped = "KILLED", str(e)
            mlflow.set_tag("stopped", stopped)
        wall = time.monotonic() - start
        if history:
            best_rmse, best_run, best_params = min(history, key=lambda h: h[0])
            client.set_tag(best_run, "best_trial", "true")
            mlflow.set_tag("best_run_id", best_run)
            mlflow.log_metrics({"best_val_rmse": best_rmse, "completed_trials": len(history)})
            mlflow.log_params({f"best_{k}": v for k, v in best_params.items()})
            plots.log_figure(plots.trials([h[0] for h in history]), "plots/val_rmse_by_trial.png")
        else:
            best_rmse, best_run, best_params = math.nan, "", {}
        if status == "KILLED":
            mlflow.end_run(status="KILLED")
    return SearchResult(
        parent_run_id=parent.info.run_id,
        model=kind.value,
        features=inp.features.value,
        trials=trials,
        completed=len(history),
        best_val_rmse=best_rmse,
        best_params=best_params,
        best_run_id=best_run,
        status=status,
        wall_s=wall,
        seconds_per_trial=wall / max(len(history), 1),
        stopped=stopped,
        history=[h[0] for h in history],
    )
