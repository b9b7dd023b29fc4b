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
from duration.config import BUDGET_ROWS, REFIT, SEARCH_EXPERIMENT, ModelKind, Settings
from duration.errors import DurationError, Stopped

if TYPE_CHECKING:
    from duration.matrices import Inputs, Split

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


def check_kind(kind: ModelKind | str) -> ModelKind:
    """The model kind, if SPACES declares its search space; else one line naming those that do."""
    kind = ModelKind(kind)
    if kind not in SPACES:
        raise DurationError(
            f"--model {kind.value} has no search space: tune one of {[k.value for k in SPACES]}"
        )
    return kind


def space(kind: ModelKind | str) -> dict:
    """The hyperopt space built from the declaration in SPACES."""
    kind = check_kind(kind)
    from hyperopt import hp
    from hyperopt.pyll import scope

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
    budget_rows: int = BUDGET_ROWS  # trials fit on at most this many rides (0: every ride)
    refit: int = REFIT  # sampled trials refit on every ride, the best first

    def check(self) -> None:
        """One clear line for a search that cannot run as asked (before hyperopt loads)."""
        check_kind(self.kind)
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
        if self.budget_rows < 0 or 0 < self.budget_rows < 1000:
            raise DurationError(
                f"--budget-rows {self.budget_rows}: give 0 (trials fit on every ride) or at "
                "least 1000 rides"
            )
        if self.refit < 1:
            raise DurationError(f"--refit {self.refit}: refit at least the best trial")


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
    budget: dict = field(default_factory=dict)  # how the trials and refits spent their time


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
    budget_rows: int = 0  # trials fit on a sample of at most this many rides (0: all)
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

    def trial_data(self) -> tuple[Split, Split, tuple | None]:
        """The training and validation rides a trial fits on (samples under the budget) and
        xgboost's matrices of them: built once per process and search, shared by its trials."""
        if self.parent_run_id not in _TRIAL_DATA:
            _TRIAL_DATA.clear()  # one search's matrices at a time
            from duration import estimators

            inp = self.load()
            tr, va = estimators.budget_splits(inp.tr, inp.va, self.budget_rows, self.seed)
            xgboost = ModelKind(self.kind) is ModelKind.xgboost
            _TRIAL_DATA[self.parent_run_id] = (
                tr,
                va,
                estimators.xgb_data(tr, va) if xgboost else None,
            )
        return _TRIAL_DATA[self.parent_run_id]

    def sampled(self) -> bool:
        """True when trials fit on a sample of the training month (the budget applies)."""
        return 0 < self.budget_rows < self.load().tr.X.shape[0]


# Per process: the trial matrices of the search in progress (see TrialContext.trial_data).
_TRIAL_DATA: dict[str, tuple] = {}


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


def _fit_scored(
    ctx: TrialContext, params: dict, tr: Split, va: Split, data, n_jobs: int | None, extra: dict
) -> tuple[object, np.ndarray, float, int | None]:
    """In the active child run: log the params, fit on `tr` stopping early on `va`, score on
    `va` and log the metrics (with `extra`). Returns the estimator, its predictions on `va`,
    its RMSE there and its best round (None but for xgboost)."""
    import mlflow

    from duration import estimators

    kind = ModelKind(ctx.kind)
    mlflow.log_params(
        {**params, "seed": ctx.seed, "n_jobs": n_jobs or os.cpu_count(),
         "train_rows": tr.X.shape[0], "val_rows": va.X.shape[0]}
    )  # fmt: skip
    callbacks = [_stop_callback(ctx)] if kind is ModelKind.xgboost else None
    est = estimators.fit(kind, tr, va, params, ctx.seed, callbacks, n_jobs, data)
    if reason := ctx.stopping():
        raise SearchStopped(reason)  # a stopped fit is not scored: its run ends KILLED
    pred = est.predict(va.X)
    s = tracking.scores(va.y, pred)
    rounds = estimators.best_iteration(est)
    metrics = {"val_rmse": s["rmse"], "val_mae": s["mae"], **extra}
    mlflow.log_metrics({**metrics, **({"best_iteration": rounds} if rounds is not None else {})})
    return est, pred, s["rmse"], rounds


def _log_model(inp: Inputs, est, pred: np.ndarray, label: str) -> None:
    """Log the fitted model of the active run, with its diagnostics on the validation month."""
    from duration import model, plots

    model.log_fitted(inp, est)
    plots.log_diagnostics(inp.hours_va, inp.va.y, pred, label)


def _fit_and_log(params: dict, ctx: TrialContext, client, n: int) -> tuple[float, int | None]:
    """Fit one trial in the active (child) run, log it; return its val RMSE and best round.

    Under the budget it fits and stops early on samples, and logs no model: only the refits
    on every ride may be registered.
    """
    tr, va, data = ctx.trial_data()
    n_jobs = ctx.n_jobs or os.cpu_count()  # a Spark task's own cores, else this machine's
    est, pred, rmse, rounds = _fit_scored(ctx, params, tr, va, data, n_jobs, {})
    if not ctx.sampled() and _in_top(client, ctx, rmse):
        _log_model(ctx.load(), est, pred, f"{ModelKind(ctx.kind).value} trial {n}")
    return rmse, rounds


@contextmanager
def _child_run(client, ctx: TrialContext, name: str, tags: dict) -> Iterator[str]:
    """A child run of the search, opened by the parent's id and made active: it ends
    FINISHED, KILLED when the search stops or is interrupted, or FAILED."""
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    mlflow.set_tracking_uri(ctx.tracking_uri)
    run_id = client.create_run(
        ctx.experiment_id,
        tags={
            **ctx.tags,
            **tracking.process_tags(),  # the process this runs in (a Spark worker's)
            MLFLOW_PARENT_RUN_ID: ctx.parent_run_id,
            **tags,
        },
        run_name=name,
    ).info.run_id
    status = "FAILED"
    tracking.resume_run(run_id)
    try:
        yield run_id
        status = "FINISHED"
    except (SearchStopped, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        mlflow.end_run(status=status)


def objective(params: dict, ctx: TrialContext) -> dict:
    """One trial: a child run of the search (opened by the parent's id), fitted and scored.

    Returns hyperopt's result dict. A trial that raises ends FAILED with its error logged
    and returns STATUS_FAIL; the search goes on. A stopped trial ends KILLED and raises
    SearchStopped.
    """
    from hyperopt import STATUS_FAIL, STATUS_OK

    if reason := ctx.stopping():
        raise SearchStopped(reason)
    client = tracking.client(ctx.tracking_uri)
    params = {**params, **ctx.fixed}
    n = len(_children(client, ctx)) + 1
    start = time.monotonic()
    run_id = ""
    try:
        with _child_run(client, ctx, f"trial-{n:03d}", {"trial": str(n)}) as run_id:
            rmse, rounds = _fit_and_log(params, ctx, client, n)
    except (SearchStopped, KeyboardInterrupt):
        raise  # the trial ended KILLED
    except Exception as e:  # the trial ended FAILED: recorded, not fatal
        if not run_id:
            raise
        error = f"{type(e).__name__}: {' '.join(str(e).split())}"[:500]
        client.set_tag(run_id, "error", error)
        return {"status": STATUS_FAIL, "error": error, "run_id": run_id}
    return {"loss": rmse, "status": STATUS_OK, "run_id": run_id, "params": params,
            "seconds": time.monotonic() - start, "rounds": rounds}  # fmt: skip


def _refit(client, ctx: TrialContext, ok: list[dict], k: int) -> list[dict]:
    """Refit the best `k` sampled trials on every training ride, each in its own child run
    that stops early on and is scored on the whole validation month, and logs its model."""
    from hyperopt import STATUS_OK

    from duration import estimators

    kind = ModelKind(ctx.kind)
    inp = ctx.load()
    _TRIAL_DATA.clear()  # the samples' matrices go before the full ones are built
    data = estimators.xgb_data(inp.tr, inp.va) if kind is ModelKind.xgboost else None
    out = []
    for i, trial in enumerate(sorted(ok, key=lambda r: r["loss"])[:k], start=1):
        if reason := ctx.stopping():
            raise SearchStopped(reason)
        start = time.monotonic()
        tags = {"refit_of": trial["run_id"], "rung": "full"}
        with _child_run(client, ctx, f"refit-{i}", tags) as run_id:
            params = trial["params"]
            extra = {"sample_val_rmse": trial["loss"]}
            est, pred, rmse, rounds = _fit_scored(ctx, params, inp.tr, inp.va, data, None, extra)
            _log_model(inp, est, pred, f"{kind.value} refit {i}")
        out.append({"loss": rmse, "status": STATUS_OK, "run_id": run_id, "params": params,
                    "seconds": time.monotonic() - start, "rounds": rounds,
                    "trial_run_id": trial["run_id"], "sample_loss": trial["loss"]})  # fmt: skip
    return out


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
            "budget_rows": config.budget_rows,
            "refit": config.refit,
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
    kids = [k for k in kids if "refit_of" not in k.data.tags]  # refits are numbered apart
    for n, kid in enumerate(kids, start=1):
        if kid.info.status == "RUNNING":
            client.set_tag(kid.info.run_id, "stopped", "cancelled with its Spark task")
            client.set_terminated(kid.info.run_id, "KILLED")
        if kid.data.tags.get("trial") != str(n):
            client.set_tag(kid.info.run_id, "trial", str(n))
            client.set_tag(kid.info.run_id, "mlflow.runName", f"trial-{n:03d}")


def _budget(ctx: TrialContext, ok: list[dict], refits: list[dict] | None) -> dict:
    """How the search spent its time: rides per trial, seconds in trials and in refits."""
    from duration.estimators import sample_size

    inp = ctx.load()
    n_train, n_val = inp.tr.X.shape[0], inp.va.X.shape[0]
    return {
        "budget_rows": ctx.budget_rows,
        "sampled": ctx.sampled(),
        "train_rows": n_train,
        "val_rows": n_val,
        "trials_s": round(sum(r.get("seconds", 0.0) for r in ok), 2),
        "trial_rounds": sum(r.get("rounds") or 0 for r in ok),
        "refit_s": round(sum(r["seconds"] for r in refits or []), 2),
        "refit_rounds": sum(r.get("rounds") or 0 for r in refits or []),
        "refits": [
            {
                k: r[k]
                for k in ("run_id", "trial_run_id", "sample_loss", "loss", "rounds", "seconds")
            }
            for r in refits or []
        ],
        "trial_train_rows": sample_size(n_train, ctx.budget_rows),
        "trial_val_rows": sample_size(n_val, ctx.budget_rows),
    }


def _finish(
    client, ctx: TrialContext, trials, status: str, stopped: str, refits: list[dict] | None = None
) -> tuple[dict, str, dict]:
    """Tag the best run and log the summary on the parent; end it with `status`.

    The best is the best trial, or under the budget the best refit (`refits`; None when the
    trials were not sampled).
    """
    from mlflow.entities import Metric, Param

    from duration import plots

    ok, failed = _results(trials)
    pool = ok if refits is None else refits
    best: dict = min(pool, key=lambda r: r["loss"]) if pool else {}
    _tidy_children(client, ctx)
    budget = _budget(ctx, ok, refits)
    client.log_dict(ctx.parent_run_id, budget, "budget.json")
    now = int(time.time() * 1000)
    metrics = {"completed_trials": len(ok), "failed_trials": len(failed),
               "budget_trials_s": budget["trials_s"], "budget_refit_s": budget["refit_s"],
               "refits": len(refits or [])}  # fmt: skip
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
    return best, status, budget


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
        budget_rows=config.budget_rows,
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
        refits = [] if ctx.sampled() else None  # under the budget, only refits are chosen
        start = time.monotonic()
        trials_wall = 0.0
        try:
            status, stopped = _run_fmin(ctx, config, trials)
            trials_wall = time.monotonic() - start
            if refits is not None and status == "FINISHED" and (done := _results(trials)[0]):
                refits = _refit(client, ctx, done, config.refit)
        except SearchStopped as e:  # stopped during the refits: the refit in flight is KILLED
            status, stopped = "KILLED", str(e)
        except KeyboardInterrupt:
            _finish(client, ctx, trials, "KILLED", "interrupted", refits)
            raise
        except BaseException:
            _finish(client, ctx, trials, "FAILED", "", refits)
            raise
        finally:
            _TRIAL_DATA.clear()
        wall = time.monotonic() - start
        best, status, budget = _finish(client, ctx, trials, status, stopped, refits)
        ok, failed = _results(trials)
    if status == "FAILED":
        raise DurationError(
            f"all {len(failed)} trials failed; the first said: {failed[0]['error'][:200]} "
            f"(see run {ctx.parent_run_id})"
        )
    result = _result(ctx, config, (ok, failed), best, status, stopped, wall)
    result.seconds_per_trial = trials_wall / max(len(ok), 1)
    result.budget = budget
    return result


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
