"""Hyperparameter search with hyperopt's TPE: one parent run, one child run per trial.

Trials run one after another here, or as Spark tasks (`SearchBackend`). Each is a module-level
objective of (params, a small picklable spec), which opens its child run by the parent's id
(see `trials`). Stopping is a deadline and an optional event: signal handling belongs to
the CLI. Under the budget, trials fit on samples and the best few are refit on every ride.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from duration.core.schema import ModelKind
from duration.data.matrices import Inputs
from duration.errors import DurationError, Stopped
from duration.tracking import datasets, experiments, runs
from duration.tracking.client import client as tracking_client
from duration.tracking.names import SEARCH_EXPERIMENT
from duration.training import estimators, plots
from duration.training.config import SearchBackend, SearchConfig
from duration.training.space import SPACES, space
from duration.training.spark_trials import Placement, cancel_on, trials_on
from duration.training.trials import DataRef, TrialRuntime, TrialSpec, children, objective, refit


@dataclass(kw_only=True)
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


def _start_parent(client: Any, inp: Inputs, config: SearchConfig) -> tuple[str, str]:
    """Create the search's parent run and log its setup; return (experiment id, run id)."""
    from mlflow.entities import Param  # deferred: MLflow takes seconds to import

    kind = ModelKind(config.kind)
    exp = experiments.experiment_id(SEARCH_EXPERIMENT)
    run_id = client.create_run(
        exp,
        tags={**runs.run_tags(inp, kind), "search": "hyperopt-tpe"},
        run_name=f"search-{kind.value}-{inp.features.value}",
    ).info.run_id
    try:
        params = {
            "model": kind.value,
            "features": inp.features.value,
            "seed": config.seed,
            "trials": config.trials,
            "backend": config.backend.value,
            "parallelism": config.parallelism,
            "budget_rows": config.budget_rows,
            "refit": config.refit,
            "search_space": json.dumps(SPACES[kind])[:6000],
        }
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        client.log_dict(run_id, {k: list(v) for k, v in SPACES[kind].items()}, "search_space.json")
        datasets.log_data(run_id, inp)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return exp, run_id


def _spec(client: Any, inp: Inputs, config: SearchConfig, where: Placement) -> TrialSpec:
    """The parent run, started, and what every trial of the search needs."""
    import mlflow  # deferred: MLflow takes seconds to import

    kind = ModelKind(config.kind)
    exp, parent = _start_parent(client, inp, config)
    return TrialSpec(
        tracking_uri=mlflow.get_tracking_uri(),
        experiment_id=exp,
        parent_run_id=parent,
        kind=kind,
        seed=config.seed,
        fixed=estimators.round_cap(kind, config.max_rounds) or {},
        tags=runs.run_tags(inp, kind),
        data=DataRef(
            settings=where.settings,
            color=inp.color,
            features=inp.features,
            train=inp.train,
            val=inp.val,
        ),
        deadline=time.time() + config.timeout if config.timeout else None,
        n_jobs=where.n_jobs,
        budget_rows=config.budget_rows,
    )


def _results(trials: Any) -> tuple[list[dict], list[dict]]:
    """The finished trials' results (in order) and the failed ones."""
    from hyperopt import STATUS_FAIL, STATUS_OK  # deferred: hyperopt loads only to search

    results = [t["result"] for t in trials.trials]
    return (
        [r for r in results if r.get("status") == STATUS_OK],
        [r for r in results if r.get("status") == STATUS_FAIL],
    )


def _tidy_children(client: Any, spec: TrialSpec) -> None:
    """End KILLED any trial a cancelled Spark task left RUNNING, and number the trials in the
    order they started (trials started at once on Spark may have counted the same number)."""
    kids = children(client, spec, order_by=["attributes.start_time ASC"])
    kids = [k for k in kids if "refit_of" not in k.data.tags]  # refits are numbered apart
    for n, kid in enumerate(kids, start=1):
        if kid.info.status == "RUNNING":
            client.set_tag(kid.info.run_id, "stopped", "cancelled with its Spark task")
            client.set_terminated(kid.info.run_id, "KILLED")
        if kid.data.tags.get("trial") != str(n):
            client.set_tag(kid.info.run_id, "trial", str(n))
            client.set_tag(kid.info.run_id, "mlflow.runName", f"trial-{n:03d}")


def _budget(runtime: TrialRuntime, ok: list[dict], refits: list[dict] | None) -> dict:
    """How the search spent its time: rides per trial, seconds in trials and in refits."""
    inp, rows = runtime.inputs, runtime.spec.budget_rows
    n_train, n_val = inp.tr.X.shape[0], inp.va.X.shape[0]
    done = refits or []
    keys = ("run_id", "trial_run_id", "sample_loss", "loss", "rounds", "seconds")
    return {
        "budget_rows": rows,
        "sampled": runtime.sampled(),
        "train_rows": n_train,
        "val_rows": n_val,
        "trials_s": round(sum(r.get("seconds", 0.0) for r in ok), 2),
        "trial_rounds": sum(r.get("rounds") or 0 for r in ok),
        "refit_s": round(sum(r["seconds"] for r in done), 2),
        "refit_rounds": sum(r.get("rounds") or 0 for r in done),
        "refits": [{k: r[k] for k in keys} for r in done],
        "trial_train_rows": estimators.sample_size(n_train, rows),
        "trial_val_rows": estimators.sample_size(n_val, rows),
    }


def _finish(
    client: Any,
    runtime: TrialRuntime,
    trials: Any,
    status: str,
    stopped: str,
    refits: list[dict] | None = None,
) -> tuple[dict, str, dict]:
    """Tag the best run and log the summary on the parent; end it with `status`.

    The best is the best trial, or under the budget the best refit (`refits`; None when the
    trials were not sampled).
    """
    from mlflow.entities import Metric, Param  # deferred: MLflow takes seconds to import

    spec, (ok, failed) = runtime.spec, _results(trials)
    pool = ok if refits is None else refits
    best: dict = min(pool, key=lambda r: r["loss"]) if pool else {}
    _tidy_children(client, spec)
    budget = _budget(runtime, ok, refits)
    client.log_dict(spec.parent_run_id, budget, "budget.json")
    now = int(time.time() * 1000)
    metrics = {
        "completed_trials": len(ok),
        "failed_trials": len(failed),
        "budget_trials_s": budget["trials_s"],
        "budget_refit_s": budget["refit_s"],
        "refits": len(refits or []),
    }
    if best:
        client.set_tag(best["run_id"], "best_trial", "true")
        client.set_tag(spec.parent_run_id, "best_run_id", best["run_id"])
        metrics["best_val_rmse"] = best["loss"]
        params = [Param(f"best_{k}", str(v)) for k, v in best["params"].items()]
        client.log_batch(spec.parent_run_id, params=params)
        fig = plots.trials([r["loss"] for r in ok])
        plots.log_figure(fig, "plots/val_rmse_by_trial.png", run_id=spec.parent_run_id)
    client.log_batch(
        spec.parent_run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()]
    )
    if stopped:
        client.set_tag(spec.parent_run_id, "stopped", stopped)
    if failed and not ok and not stopped:
        status = "FAILED"
    client.set_terminated(spec.parent_run_id, status)
    return best, status, budget


def _run_fmin(runtime: TrialRuntime, config: SearchConfig, trials: Any) -> tuple[str, str]:
    """Run hyperopt's fmin; return the parent's end status and why it stopped ('' if not)."""
    from hyperopt import fmin, tpe  # deferred: hyperopt loads only to search
    from hyperopt.exceptions import AllTrialsFailed

    local = config.backend is SearchBackend.local  # a Spark task builds its own runtime
    fn = functools.partial(objective, spec=runtime.spec, runtime=runtime if local else None)
    try:
        with cancel_on(runtime.stop, trials):
            fmin(
                fn,
                space(config.kind),
                algo=tpe.suggest,
                max_evals=config.trials,
                trials=trials,
                rstate=np.random.default_rng(config.seed),
                timeout=config.timeout,
                show_progressbar=config.progress,
                return_argmin=False,
            )
    except Stopped as e:  # the in-flight trial has already ended KILLED
        return "KILLED", str(e)
    except AllTrialsFailed:  # hyperopt's own end of a search whose every trial failed
        pass
    cancelled = getattr(trials, "_fmin_cancelled", False)  # SparkTrials: timeout or stop
    if cancelled or len(trials.trials) < config.trials:  # no trial started after the stop
        return "KILLED", runtime.stopping() or "timeout"
    return "FINISHED", ""


def _search(runtime: TrialRuntime, config: SearchConfig, trials: Any, client: Any) -> tuple:
    """fmin, then the refits under the budget; the parent is ended, whatever happens.
    Returns (status, stopped, refits, trials' wall seconds)."""
    refits: list[dict] | None = [] if runtime.sampled() else None  # under the budget
    start, trials_wall = time.monotonic(), 0.0
    try:
        status, stopped = _run_fmin(runtime, config, trials)
        trials_wall = time.monotonic() - start
        if refits is not None and status == "FINISHED" and (done := _results(trials)[0]):
            refits = refit(client, runtime, done, config.refit)
    except Stopped as e:  # stopped during the refits: the refit in flight is KILLED
        status, stopped = "KILLED", str(e)
    except KeyboardInterrupt:
        _finish(client, runtime, trials, "KILLED", "interrupted", refits)
        raise
    except BaseException:
        _finish(client, runtime, trials, "FAILED", "", refits)
        raise
    finally:
        runtime.release()
    return status, stopped, refits, trials_wall


def search(inp: Inputs, config: SearchConfig, stop: threading.Event | None = None) -> SearchResult:
    """Run a TPE search: one parent run, one child run per trial, all by explicit run id.

    Stops cleanly at `config.timeout` or when `stop` is set (the CLI sets it on Ctrl-C and
    SIGTERM): trials in flight end KILLED, and so does the parent. A KeyboardInterrupt ends
    both KILLED too, then propagates.
    """
    config.check()
    space(config.kind)
    client = tracking_client()
    with trials_on(
        config.backend, inp, config.parallelism, config.timeout, config.spark_master
    ) as (trials, where):
        runtime = TrialRuntime(spec=_spec(client, inp, config, where), inputs=inp, stop=stop)
        start = time.monotonic()
        status, stopped, refits, trials_wall = _search(runtime, config, trials, client)
        wall = time.monotonic() - start
        best, status, budget = _finish(client, runtime, trials, status, stopped, refits)
        ok, failed = _results(trials)
    if status == "FAILED":
        raise DurationError(
            f"all {len(failed)} trials failed; the first said: {failed[0]['error'][:200]} "
            f"(see run {runtime.spec.parent_run_id})"
        )
    return _result(
        runtime.spec,
        config,
        outcome=(ok, failed),
        best=best,
        status=status,
        stopped=stopped,
        wall=wall,
        trials_wall=trials_wall,
        budget=budget,
    )


def _result(spec: TrialSpec, config: SearchConfig, **done: Any) -> SearchResult:
    """The SearchResult of finished trials (`done`: outcome, best, status, stopped, wall,
    trials_wall, budget)."""
    from hyperopt import space_eval  # deferred: hyperopt loads only to search

    ok, failed = done["outcome"]
    best = done["best"]
    params = {**space_eval(space(config.kind), best["params"]), **spec.fixed} if best else {}
    return SearchResult(
        parent_run_id=spec.parent_run_id,
        model=spec.kind.value,
        features=spec.data.features.value,
        trials=config.trials,
        completed=len(ok),
        best_val_rmse=best.get("loss", math.nan),
        best_params=params,
        best_run_id=best.get("run_id", ""),
        status=done["status"],
        wall_s=done["wall"],
        seconds_per_trial=done["trials_wall"] / max(len(ok), 1),
        stopped=done["stopped"],
        failed=len(failed),
        history=[r["loss"] for r in ok],
        budget=done["budget"],
    )
