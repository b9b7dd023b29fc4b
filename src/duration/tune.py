"""Hyperparameter search with hyperopt's TPE: one parent run, one child run per trial.

The objective is a plain module-level function of (params, a small picklable context). It
opens its child run by the parent's id through the client API, so it runs the same in this
process or in another one. Stopping is a deadline and an optional event in that context:
signal handling belongs to the CLI.
"""

from __future__ import annotations

import functools
import json
import math
import os
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from duration import tracking
from duration.config import SEARCH_EXPERIMENT, ModelKind, Settings
from duration.errors import DurationError, Stopped

if TYPE_CHECKING:
    from duration.matrices import Inputs

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


BACKENDS = ("local", "spark")
SearchStopped = Stopped  # raised inside a trial when the search must stop


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


@dataclass(frozen=True)
class SearchConfig:
    """How to search: which model, how many trials, the seed and the limits."""

    kind: ModelKind = ModelKind.xgboost
    trials: int = 30
    seed: int = 42
    timeout: float | None = None  # seconds; trials in flight stop at their next round
    max_rounds: int | None = None  # cap xgboost's boosting rounds
    progress: bool = True
    backend: str = "local"  # "local": one trial after another; "spark": hyperopt's SparkTrials
    parallelism: int = 1  # trials at once (Spark only)
    spark_master: str | None = None  # default: the settings' (DURATION_SPARK_MASTER)

    def check(self) -> None:
        """One clear line for a search that cannot run as asked."""
        if self.trials < 1:
            raise DurationError(f"--trials {self.trials}: the search needs at least 1 trial")
        if self.backend not in BACKENDS:
            raise DurationError(f"--backend {self.backend!r}: use one of {list(BACKENDS)}")
        if self.parallelism < 1:
            raise DurationError(f"--parallelism {self.parallelism}: give at least 1")
        if self.backend == "local" and self.parallelism != 1:
            raise DurationError(
                f"--parallelism {self.parallelism} needs --backend spark: the local backend "
                "runs one trial at a time (on every core)"
            )


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
    failed: int = 0
    history: list[float] = field(default_factory=list)


@dataclass
class TrialContext:
    """What a trial needs, small and picklable: where to log, what to fit, when to stop.

    `inputs` (the loaded matrices) and `stop` (an event the CLI sets on Ctrl-C) are local
    conveniences and are not pickled: a trial in another process loads the matrices from
    the feature stage files and stops at `deadline`.
    """

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    kind: str
    seed: int
    fixed: dict
    tags: dict
    settings: Settings
    color: str
    features: str
    train: str
    val: str
    deadline: float | None = None  # time.time() after which a trial stops
    n_jobs: int | None = None
    inputs: Inputs | None = None
    stop: threading.Event | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "inputs": None, "stop": None}

    def stopping(self) -> str:
        """Why trials must stop now ('interrupted' or 'timeout'), or ''."""
        if self.stop is not None and self.stop.is_set():
            return "interrupted"
        if self.deadline is not None and time.time() >= self.deadline:
            return "timeout"
        return ""

    def load(self) -> Inputs:
        """The matrices and rides of the search: given, or read from the stage files once
        per process (a Spark worker reuses its Python process across trials)."""
        if self.inputs is None:
            self.inputs = _load(self.settings, self.color, self.features, self.train, self.val)
        return self.inputs


@functools.lru_cache(maxsize=1)
def _load(settings: Settings, color: str, fs: str, train: str, val: str) -> Inputs:
    from duration import matrices

    return matrices.load_inputs(settings, color, fs, train, val)


def _stop_callback(ctx: TrialContext):
    """An xgboost callback that ends training at the next round once the search must stop."""
    import xgboost as xgb

    class StopWhenAsked(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            return bool(ctx.stopping())

    return StopWhenAsked()


def _children(client, ctx: TrialContext, where: str = "", **kwargs) -> list:
    """The search's child runs (optionally filtered further)."""
    filt = f"tags.mlflow.parentRunId = '{ctx.parent_run_id}'" + (f" and {where}" if where else "")
    return client.search_runs([ctx.experiment_id], filter_string=filt, **kwargs)


def _in_top(client, ctx: TrialContext, rmse: float) -> bool:
    """True when `rmse` enters the best TOP_N finished trials so far."""
    best = _children(
        client,
        ctx,
        "attributes.status = 'FINISHED'",
        order_by=["metrics.val_rmse ASC"],
        max_results=TOP_N,
    )
    return len(best) < TOP_N or rmse < best[-1].data.metrics["val_rmse"]


def _fit_and_log(params: dict, ctx: TrialContext, client, n: int) -> float:
    """Fit one trial in the active (child) run, log it, return its val RMSE."""
    import mlflow

    from duration import estimators, model, plots

    kind = ModelKind(ctx.kind)
    inp = ctx.load()
    n_jobs = ctx.n_jobs or os.cpu_count()  # a Spark task's own cores, else this machine's
    mlflow.log_params({**params, "seed": ctx.seed, "n_jobs": n_jobs})
    callbacks = [_stop_callback(ctx)] if kind is ModelKind.xgboost else None
    est = estimators.fit(kind, inp.tr, inp.va, params, ctx.seed, callbacks, n_jobs)
    if reason := ctx.stopping():
        raise SearchStopped(reason)  # a stopped trial is not scored: it ends KILLED
    pred = est.predict(inp.va.X)
    s = tracking.scores(inp.va.y, pred)
    metrics = {"val_rmse": s["rmse"], "val_mae": s["mae"]}
    if (best_it := estimators.best_iteration(est)) is not None:
        metrics["best_iteration"] = best_it
    mlflow.log_metrics(metrics)
    if _in_top(client, ctx, s["rmse"]):
        model.log_fitted(inp, est)
        plots.log_diagnostics(inp.hours_va, inp.va.y, pred, f"{kind.value} trial {n}")
    return s["rmse"]


def objective(params: dict, ctx: TrialContext) -> dict:
    """One trial: a child run of the search (opened by the parent's id), fitted and scored.

    Returns hyperopt's result dict. A trial that raises ends FAILED with its error logged
    and returns STATUS_FAIL; the search goes on. A stopped trial ends KILLED and raises
    SearchStopped.
    """
    import mlflow
    from hyperopt import STATUS_FAIL, STATUS_OK
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    if reason := ctx.stopping():
        raise SearchStopped(reason)
    mlflow.set_tracking_uri(ctx.tracking_uri)
    client = tracking.client(ctx.tracking_uri)
    params = {**params, **ctx.fixed}
    n = len(_children(client, ctx)) + 1
    run_id = client.create_run(
        ctx.experiment_id,
        tags={
            **ctx.tags,
            **tracking.process_tags(),  # the process this trial runs in (a Spark worker's)
            MLFLOW_PARENT_RUN_ID: ctx.parent_run_id,
            "trial": str(n),
        },
        run_name=f"trial-{n:03d}",
    ).info.run_id
    status = "FAILED"
    tracking.resume_run(run_id)
    try:
        rmse = _fit_and_log(params, ctx, client, n)
        status = "FINISHED"
    except (SearchStopped, KeyboardInterrupt):
        status = "KILLED"
        raise
    except Exception as e:  # noqa: BLE001 - a failed trial is recorded, not fatal
        error = f"{type(e).__name__}: {' '.join(str(e).split())}"[:500]
        mlflow.set_tag("error", error)
        return {"status": STATUS_FAIL, "error": error, "run_id": run_id}
    finally:
        mlflow.end_run(status=status)
    return {"loss": rmse, "status": STATUS_OK, "run_id": run_id, "params": params}


def _start_parent(client, inp: Inputs, config: SearchConfig) -> tuple[str, str]:
    """Create the search's parent run and log its setup; return (experiment id, run id)."""
    from mlflow.entities import Param

    kind = ModelKind(config.kind)
    exp = tracking.experiment_id(SEARCH_EXPERIMENT)
    run_id = client.create_run(
        exp,
        tags={**tracking.run_tags(inp, kind), "search": "hyperopt-tpe"},
        run_name=f"search-{kind.value}-{inp.features.value}",
    ).info.run_id
    try:
        params = {
            "model": kind.value,
            "features": inp.features.value,
            "seed": config.seed,
            "trials": config.trials,
            "backend": config.backend,
            "parallelism": config.parallelism,
            "search_space": json.dumps(SPACES[kind])[:6000],
        }
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        client.log_dict(run_id, {k: list(v) for k, v in SPACES[kind].items()}, "search_space.json")
        tracking.log_data(run_id, inp)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return exp, run_id


def _results(trials) -> tuple[list[dict], list[dict]]:
    """The finished trials' results (in order) and the failed ones."""
    from hyperopt import STATUS_FAIL, STATUS_OK

    results = [t["result"] for t in trials.trials]
    return (
        [r for r in results if r.get("status") == STATUS_OK],
        [r for r in results if r.get("status") == STATUS_FAIL],
    )


def _tidy_children(client, ctx: TrialContext) -> None:
    """End KILLED any trial a cancelled Spark task left RUNNING, and number the trials in the
    order they started (trials started at once on Spark may have counted the same number)."""
    kids = _children(client, ctx, order_by=["attributes.start_time ASC"])
    for n, kid in enumerate(kids, start=1):
        if kid.info.status == "RUNNING":
            client.set_tag(kid.info.run_id, "stopped", "cancelled with its Spark task")
            client.set_terminated(kid.info.run_id, "KILLED")
        if kid.data.tags.get("trial") != str(n):
            client.set_tag(kid.info.run_id, "trial", str(n))
            client.set_tag(kid.info.run_id, "mlflow.runName", f"trial-{n:03d}")


def _finish(client, ctx: TrialContext, trials, status: str, stopped: str) -> tuple[dict, str]:
    """Tag the best trial and log the summary on the parent; end it with `status`."""
    from mlflow.entities import Metric, Param

    from duration import plots

    ok, failed = _results(trials)
    best: dict = min(ok, key=lambda r: r["loss"]) if ok else {}
    _tidy_children(client, ctx)
    now = int(time.time() * 1000)
    metrics = {"completed_trials": len(ok), "failed_trials": len(failed)}
    if best:
        client.set_tag(best["run_id"], "best_trial", "true")
        client.set_tag(ctx.parent_run_id, "best_run_id", best["run_id"])
        metrics["best_val_rmse"] = best["loss"]
        params = [Param(f"best_{k}", str(v)) for k, v in best["params"].items()]
        client.log_batch(ctx.parent_run_id, params=params)
        fig = plots.trials([r["loss"] for r in ok])
        plots.log_figure(fig, "plots/val_rmse_by_trial.png", run_id=ctx.parent_run_id)
    client.log_batch(
        ctx.parent_run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()]
    )
    if stopped:
        client.set_tag(ctx.parent_run_id, "stopped", stopped)
    if failed and not ok and not stopped:
        status = "FAILED"
    client.set_terminated(ctx.parent_run_id, status)
    return best, status


def _context(client, inp: Inputs, config: SearchConfig, stop, where: dict) -> TrialContext:
    import mlflow

    from duration import estimators

    kind = ModelKind(config.kind)
    exp, parent = _start_parent(client, inp, config)
    return TrialContext(
        tracking_uri=mlflow.get_tracking_uri(),
        experiment_id=exp,
        parent_run_id=parent,
        kind=kind.value,
        seed=config.seed,
        fixed=estimators.round_cap(kind, config.max_rounds) or {},
        tags=tracking.run_tags(inp, kind),
        settings=where["settings"],
        color=inp.color.value,
        features=inp.features.value,
        train=inp.train,
        val=inp.val,
        deadline=time.time() + config.timeout if config.timeout else None,
        n_jobs=where["n_jobs"],
        inputs=inp,
        stop=stop,
    )


@contextmanager
def _trials(config: SearchConfig, inp: Inputs) -> Iterator[tuple[object, dict]]:
    """hyperopt's trials object for the backend, and where trials run: the settings they
    read the stage files with, and the cores each may use."""
    from hyperopt import Trials

    if config.backend == "local":
        yield Trials(), {"settings": inp.settings, "n_jobs": None}
        return
    from hyperopt import SparkTrials

    from duration import matrices, spark

    session = spark.session(config.spark_master or inp.settings.spark_master)
    warnings.filterwarnings("ignore", "Spark session is not provided", UserWarning)
    try:
        settings = replace(inp.settings, data_dir=inp.settings.executor_data_dir)
        stage = matrices.features_dir(settings, inp.color, inp.features, inp.train)
        spark.check_readable(session, stage)
        trials = SparkTrials(
            parallelism=config.parallelism, timeout=config.timeout, spark_session=session
        )
        yield trials, {"settings": settings, "n_jobs": spark.task_cpus(session)}
    finally:
        session.stop()


@contextmanager
def _cancel_on(stop: threading.Event | None, trials) -> Iterator[None]:
    """SparkTrials has no stop of its own but its timeout: on `stop`, its timeout becomes 0,
    so its dispatcher cancels the Spark job group of every trial in flight."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.25):
            if stop is not None and stop.is_set():
                trials.timeout = 0
                return

    watcher = threading.Thread(target=watch, daemon=True)
    if hasattr(trials, "_fmin_cancelled"):
        watcher.start()
    try:
        yield
    finally:
        done.set()


def _run_fmin(ctx: TrialContext, config: SearchConfig, trials) -> tuple[str, str]:
    """Run hyperopt's fmin; return the parent's end status and why it stopped ('' if not)."""
    from hyperopt import fmin, tpe
    from hyperopt.exceptions import AllTrialsFailed

    try:
        with _cancel_on(ctx.stop, trials):
            fmin(
                functools.partial(objective, ctx=ctx),
                space(config.kind),
                algo=tpe.suggest,
                max_evals=config.trials,
                trials=trials,
                rstate=np.random.default_rng(config.seed),
                timeout=config.timeout,
                show_progressbar=config.progress,
                return_argmin=False,
            )
    except SearchStopped as e:  # the in-flight trial has already ended KILLED
        return "KILLED", str(e)
    except AllTrialsFailed:  # hyperopt's own end of a search whose every trial failed
        pass
    cancelled = getattr(trials, "_fmin_cancelled", False)  # SparkTrials: timeout or stop
    if cancelled or len(trials.trials) < config.trials:  # no trial started after the stop
        return "KILLED", ctx.stopping() or "timeout"
    return "FINISHED", ""


def search(inp: Inputs, config: SearchConfig, stop: threading.Event | None = None) -> SearchResult:
    """Run a TPE search: one parent run, one child run per trial, all by explicit run id.

    Trials run one after another here, or as Spark tasks (`config.backend`). Stops cleanly at
    `config.timeout` or when `stop` is set (the CLI sets it on Ctrl-C and SIGTERM): trials in
    flight end KILLED, and so does the parent. A KeyboardInterrupt ends both KILLED too, then
    propagates.
    """
    config.check()
    space(config.kind)
    client = tracking.client()
    with _trials(config, inp) as (trials, where):
        ctx = _context(client, inp, config, stop, where)
        start = time.monotonic()
        try:
            status, stopped = _run_fmin(ctx, config, trials)
        except KeyboardInterrupt:
            _finish(client, ctx, trials, "KILLED", "interrupted")
            raise
        except BaseException:
            _finish(client, ctx, trials, "FAILED", "")
            raise
        wall = time.monotonic() - start
        best, status = _finish(client, ctx, trials, status, stopped)
        ok, failed = _results(trials)
    if status == "FAILED":
        raise DurationError(
            f"all {len(failed)} trials failed; the first said: {failed[0]['error'][:200]} "
            f"(see run {ctx.parent_run_id})"
        )
    return _result(ctx, config, (ok, failed), best, status, stopped, wall)


def _result(ctx, config, outcome: tuple, best: dict, status: str, stopped: str, wall: float):
    """The SearchResult of finished (`outcome`: ok and failed results) trials."""
    from hyperopt import space_eval

    ok, failed = outcome
    return SearchResult(
        parent_run_id=ctx.parent_run_id,
        model=ctx.kind,
        features=ctx.features,
        trials=config.trials,
        completed=len(ok),
        best_val_rmse=best.get("loss", math.nan),
        best_params={**space_eval(space(config.kind), best["params"]), **ctx.fixed} if best else {},
        best_run_id=best.get("run_id", ""),
        status=status,
        wall_s=wall,
        seconds_per_trial=wall / max(len(ok), 1),
        stopped=stopped,
        failed=len(failed),
        history=[r["loss"] for r in ok],
    )
