"""One trial of the search: a child run of the search's parent, opened by the parent's id,
fitted and scored. It runs the same in this process or in a Spark worker.

A trial gets two things: a `TrialSpec`, small and picklable (where to log, what to fit,
when to stop), and a `TrialRuntime`, the live state of the process it runs in (the loaded
matrices, the stop event, the trial matrices built once). In this process the search hands
its runtime to every trial; a Spark worker builds its own from the spec.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from duration.core.metrics import scores
from duration.core.schema import Color, FeatureSet, ModelKind
from duration.data import matrices
from duration.data.matrices import Inputs, Split
from duration.errors import Stopped
from duration.settings import Settings
from duration.tracking import runs
from duration.tracking.client import client as tracking_client
from duration.tracking.names import TOP_N
from duration.training import estimators, plots
from duration.training.train import log_fitted


@dataclass(frozen=True, kw_only=True)
class DataRef:
    """The feature stage a search reads, with the settings of the process that reads it."""

    settings: Settings
    color: Color
    features: FeatureSet
    train: str
    val: str

    def load(self) -> Inputs:
        return matrices.load_inputs(self.settings, self.color, self.features, self.train, self.val)


@dataclass(frozen=True, kw_only=True)
class TrialSpec:
    """What a trial needs, small and picklable: where to log, what to fit, when to stop."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    kind: ModelKind
    seed: int
    fixed: dict[str, Any]  # params every trial takes as they are (a cap on rounds)
    tags: dict[str, str]
    data: DataRef
    deadline: float | None = None  # time.time() after which a trial stops
    n_jobs: int | None = None  # cores per trial (a Spark task's); None: this machine's
    budget_rows: int = 0  # trials fit on a sample of at most this many rides (0: all)


@dataclass
class TrialRuntime:
    """A search's live state in the process its trials run in."""

    spec: TrialSpec
    inputs: Inputs
    stop: threading.Event | None = None  # set by the CLI on Ctrl-C (this process only)
    _trial_data: tuple | None = field(default=None, init=False, repr=False)

    @classmethod
    def load(cls, spec: TrialSpec) -> TrialRuntime:
        """The runtime of a process that has only the spec: it reads the stage files."""
        return cls(spec=spec, inputs=spec.data.load())

    def stopping(self) -> str:
        """Why trials must stop now ('interrupted' or 'timeout'), or ''."""
        return stopping(self.spec, self.stop)

    def sampled(self) -> bool:
        """True when trials fit on a sample of the training month (the budget applies)."""
        return 0 < self.spec.budget_rows < self.inputs.tr.X.shape[0]

    def trial_data(self) -> tuple[Split, Split, tuple | None]:
        """The training and validation rides a trial fits on (samples under the budget) and
        xgboost's matrices of them: built once, shared by the trials of this process."""
        if self._trial_data is None:
            inp, spec = self.inputs, self.spec
            tr, va = estimators.budget_splits(inp.tr, inp.va, spec.budget_rows, spec.seed)
            xgb = estimators.xgb_data(tr, va) if spec.kind is ModelKind.xgboost else None
            self._trial_data = (tr, va, xgb)
        return self._trial_data

    def release(self) -> None:
        """Drop the trials' matrices (before the refits build the full ones)."""
        self._trial_data = None


def stopping(spec: TrialSpec, stop: threading.Event | None) -> str:
    """Why trials must stop now ('interrupted' or 'timeout'), or ''."""
    if stop is not None and stop.is_set():
        return "interrupted"
    if spec.deadline is not None and time.time() >= spec.deadline:
        return "timeout"
    return ""


def _stop_callback(runtime: TrialRuntime) -> Any:
    """An xgboost callback that ends training at the next round once the search must stop."""
    import xgboost as xgb  # deferred: xgboost loads only to fit

    class StopWhenAsked(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            return bool(runtime.stopping())

    return StopWhenAsked()


def children(client: Any, spec: TrialSpec, where: str = "", **kwargs: Any) -> list:
    """The search's child runs (optionally filtered further)."""
    filt = f"tags.mlflow.parentRunId = '{spec.parent_run_id}'" + (f" and {where}" if where else "")
    return list(client.search_runs([spec.experiment_id], filter_string=filt, **kwargs))


def _in_top(client: Any, spec: TrialSpec, rmse: float) -> bool:
    """True when `rmse` enters the best TOP_N finished trials so far."""
    best = children(
        client,
        spec,
        "attributes.status = 'FINISHED'",
        order_by=["metrics.val_rmse ASC"],
        max_results=TOP_N,
    )
    return len(best) < TOP_N or rmse < best[-1].data.metrics["val_rmse"]


@dataclass(frozen=True, kw_only=True)
class Fitted:
    """A fit scored on its validation rides."""

    estimator: Any
    pred: np.ndarray
    rmse: float
    rounds: int | None  # xgboost's best round; None for other estimators


def fit_scored(
    runtime: TrialRuntime,
    params: dict,
    tr: Split,
    va: Split,
    data: tuple | None,
    n_jobs: int | None,
    extra: dict,
) -> Fitted:
    """In the active child run: log the params, fit on `tr` stopping early on `va`, score on
    `va` and log the metrics (with `extra`)."""
    import mlflow  # deferred: MLflow takes seconds to import

    spec = runtime.spec
    mlflow.log_params(
        {
            **params,
            "seed": spec.seed,
            "n_jobs": n_jobs or os.cpu_count(),
            "train_rows": tr.X.shape[0],
            "val_rows": va.X.shape[0],
        }
    )
    callbacks = [_stop_callback(runtime)] if spec.kind is ModelKind.xgboost else None
    est = estimators.fit(spec.kind, tr, va, params, spec.seed, callbacks, n_jobs, data)
    if reason := runtime.stopping():
        raise Stopped(reason)  # a stopped fit is not scored: its run ends KILLED
    pred = est.predict(va.X)
    s = scores(va.y, pred)
    rounds = estimators.best_iteration(est)
    metrics = {"val_rmse": s["rmse"], "val_mae": s["mae"], **extra}
    mlflow.log_metrics({**metrics, **({"best_iteration": rounds} if rounds is not None else {})})
    return Fitted(estimator=est, pred=pred, rmse=s["rmse"], rounds=rounds)


def log_model(inp: Inputs, fitted: Fitted, label: str) -> None:
    """Log the fitted model of the active run, with its diagnostics on the validation month."""
    log_fitted(inp, fitted.estimator)
    plots.log_diagnostics(inp.hours_va, inp.va.y, fitted.pred, label)


@contextmanager
def child_run(client: Any, spec: TrialSpec, name: str, tags: dict) -> Iterator[str]:
    """A child run of the search, opened by the parent's id and made active: it ends
    FINISHED, KILLED when the search stops or is interrupted, or FAILED."""
    import mlflow  # deferred: MLflow takes seconds to import
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    mlflow.set_tracking_uri(spec.tracking_uri)
    run_id = client.create_run(
        spec.experiment_id,
        tags={
            **spec.tags,
            **runs.process_tags(),  # the process this runs in (a Spark worker's)
            MLFLOW_PARENT_RUN_ID: spec.parent_run_id,
            **tags,
        },
        run_name=name,
    ).info.run_id
    status = "FAILED"
    runs.resume_run(run_id)
    try:
        yield run_id
        status = "FINISHED"
    except (Stopped, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        mlflow.end_run(status=status)


def _fit_and_log(params: dict, runtime: TrialRuntime, client: Any, n: int) -> Fitted:
    """Fit one trial in the active (child) run, log it; return the scored fit.

    Under the budget it fits and stops early on samples, and logs no model: only the refits
    on every ride may be registered.
    """
    tr, va, data = runtime.trial_data()
    n_jobs = runtime.spec.n_jobs or os.cpu_count()
    fitted = fit_scored(runtime, params, tr, va, data, n_jobs, {})
    if not runtime.sampled() and _in_top(client, runtime.spec, fitted.rmse):
        log_model(runtime.inputs, fitted, f"{runtime.spec.kind.value} trial {n}")
    return fitted


def objective(params: dict, spec: TrialSpec, runtime: TrialRuntime | None = None) -> dict:
    """One trial: a child run of the search (opened by the parent's id), fitted and scored.

    Returns hyperopt's result dict. A trial that raises ends FAILED with its error logged
    and returns STATUS_FAIL; the search goes on. A stopped trial ends KILLED and raises
    Stopped. Without a `runtime` (a Spark worker), it reads the stage files itself.
    """
    from hyperopt import STATUS_FAIL, STATUS_OK  # deferred: hyperopt loads only to search

    if reason := stopping(spec, runtime.stop if runtime else None):
        raise Stopped(reason)
    runtime = runtime or TrialRuntime.load(spec)
    client = tracking_client(spec.tracking_uri)
    params = {**params, **spec.fixed}
    n = len(children(client, spec)) + 1
    start = time.monotonic()
    run_id = ""
    try:
        with child_run(client, spec, f"trial-{n:03d}", {"trial": str(n)}) as run_id:
            fitted = _fit_and_log(params, runtime, client, n)
    except (Stopped, KeyboardInterrupt):
        raise  # the trial ended KILLED
    except Exception as e:  # the trial ended FAILED: recorded, not fatal
        if not run_id:
            raise
        error = f"{type(e).__name__}: {' '.join(str(e).split())}"[:500]
        client.set_tag(run_id, "error", error)
        return {"status": STATUS_FAIL, "error": error, "run_id": run_id}
    return {
        "loss": fitted.rmse,
        "status": STATUS_OK,
        "run_id": run_id,
        "params": params,
        "seconds": time.monotonic() - start,
        "rounds": fitted.rounds,
    }


def refit(client: Any, runtime: TrialRuntime, ok: list[dict], k: int) -> list[dict]:
    """Refit the best `k` sampled trials on every training ride, each in its own child run
    that stops early on and is scored on the whole validation month, and logs its model."""
    from hyperopt import STATUS_OK  # deferred: hyperopt loads only to search

    spec, inp = runtime.spec, runtime.inputs
    runtime.release()  # the samples' matrices go before the full ones are built
    data = estimators.xgb_data(inp.tr, inp.va) if spec.kind is ModelKind.xgboost else None
    out = []
    for i, trial in enumerate(sorted(ok, key=lambda r: r["loss"])[:k], start=1):
        if reason := runtime.stopping():
            raise Stopped(reason)
        start = time.monotonic()
        tags = {"refit_of": trial["run_id"], "rung": "full"}
        with child_run(client, spec, f"refit-{i}", tags) as run_id:
            params = trial["params"]
            extra = {"sample_val_rmse": trial["loss"]}
            fitted = fit_scored(runtime, params, inp.tr, inp.va, data, None, extra)
            log_model(inp, fitted, f"{spec.kind.value} refit {i}")
        out.append(
            {
                "loss": fitted.rmse,
                "status": STATUS_OK,
                "run_id": run_id,
                "params": params,
                "seconds": time.monotonic() - start,
                "rounds": fitted.rounds,
                "trial_run_id": trial["run_id"],
                "sample_loss": trial["loss"],
            }
        )
    return out
