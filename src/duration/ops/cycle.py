"""The monthly cycle: monitor a new labelled month with Production; when it drifted or
degraded, retrain on the latest labelled months before it, and promote the challenger only
if it passes the gate (the same as `promote`'s) on that month, which it never saw.

Invariant: the gate month is not among the months the challenger was trained, early-stopped,
searched or selected on. It appears on the decision run only.
"""

from __future__ import annotations

import json
import math
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd

from duration.core.schema import Color, month_range, previous_month
from duration.data import matrices, prepare, tlc
from duration.errors import DurationError, NotPublished, Stopped
from duration.ops import cycle_live, monitor, notify
from duration.ops.decision import CycleResult, recorded
from duration.ops.specs import AWAITING_APPROVAL, CycleRequest, check_range
from duration.registry import register as reg
from duration.registry.aliases import Wanted
from duration.registry.lease import month_lock, promote_lock
from duration.registry.promote import Comparison, compare
from duration.registry.uris import set_production, version_in
from duration.settings import Settings
from duration.tracking import experiments, runs
from duration.tracking.client import client
from duration.tracking.names import CYCLE_EXPERIMENT
from duration.training import plots
from duration.training.search import SearchConfig, search

LOOKBACK = 36  # months searched back for labelled months the source has


def labelled_months(settings: Settings, color: Color | str, before: str, count: int) -> list[str]:
    """The latest `count` months before `before` that the source has, oldest first."""
    found: list[str] = []
    month = before
    for _ in range(LOOKBACK):
        month = previous_month(month)
        try:
            prepare.prepare(settings, color, month)
        except NotPublished:
            continue  # a gap in the source: a broken download or file still fails here
        found.append(month)
        if len(found) == count:
            return found[::-1]
    raise DurationError(
        f"only {len(found)} labelled month(s) before {before} in the last {LOOKBACK} months "
        f"at {settings.paths.tlc_url}: the cycle needs {count} (--window) to retrain"
    )


def retrain(
    settings: Settings, req: CycleRequest, stop: threading.Event | None
) -> tuple[reg.Registered, list[str], str]:
    """Search on the window before the month (the older months train, the newest validates),
    register the best by validation RMSE in Staging, never looking at the month itself."""
    window = labelled_months(settings, req.color, req.month, req.window)
    train, val = "+".join(window[:-1]), window[-1]
    matrices.vectorize(settings, req.color, req.features, train, [val])
    inp = matrices.load_inputs(settings, req.color, req.features, train, val)
    config = SearchConfig(
        trials=req.trials, seed=req.seed, max_rounds=req.max_rounds, progress=False
    )
    found = search(inp, config, stop)
    if found.status == "KILLED":
        raise Stopped(
            f"the retraining search for {req.month} was stopped ({found.stopped}): no version "
            "was registered and no decision recorded; run the month again to decide it"
        )
    registered = reg.register(settings, None, req.name, parent_run_id=found.parent_run_id)
    return registered, window[:-1], val


def replay(
    settings: Settings,
    req: CycleRequest,
    start: str,
    end: str,
    stop: threading.Event | None = None,
    say: Callable[[str], Any] = print,
) -> list[CycleResult]:
    """The cycle for each month from `start` to `end` in order, skipping (in one line each)
    months the source does not have; one replay run holds the decision runs and a plot."""
    check_range(start, end)
    exp = experiments.experiment_id(CYCLE_EXPERIMENT)
    tags = {"model_name": req.name, **runs.process_tags()}
    parent = client().create_run(exp, run_name=f"replay-{start}-{end}", tags=tags).info.run_id
    results: list[CycleResult] = []
    with runs.ended(lambda status: client().set_terminated(parent, status)):
        for month in month_range(start, end):
            if stop is not None and stop.is_set():
                raise Stopped(
                    f"the replay was stopped before {month}: the months before it "
                    "are decided; replay from it to go on"
                )
            try:
                tlc.download(settings, req.color, month, progress=False)
            except NotPublished:
                say(f"{month}: skipped: {settings.paths.tlc_url} has no {req.color.value} {month}")
                continue
            results.append(run(settings, replace(req, month=month), stop, parent))
            say(row(results[-1]))
        _log_history(parent, results)
    return results


ROW = "{month:8}  {production:>10}  {rmse:>7}  {drift:>5}  {verdict:8}  {action}"


def row(r: CycleResult | None) -> str:
    """One line of the replay table (its header for None)."""
    if r is None:
        return ROW.format(
            month="month",
            production="Production",
            rmse="RMSE",
            drift="drift",
            verdict="verdict",
            action="action",
        )
    return ROW.format(
        month=r.month,
        production=f"v{r.champion_version}",
        rmse=f"{r.rmse:.4f}",
        drift=f"{r.drift_share:.2f}",
        verdict=r.verdict,
        action=r.action + (f" v{r.challenger_version}" if r.challenger_version else ""),
    )


def _log_history(parent: str, results: list[CycleResult]) -> None:
    """The replay's table and its RMSE and drift plot, on the replay run."""
    if not results:
        return
    table = pd.DataFrame([asdict(r) for r in results])
    fig = plots.history(
        list(table["month"]),
        list(table["rmse"]),
        list(table["drift_share"]),
        list(table["action"] == "promoted"),
    )
    plots.log_figure(fig, "plots/history.png", run_id=parent)
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / "replay.csv", index=False)
        client().log_artifact(parent, str(Path(tmp) / "replay.csv"), "cycle")


def run(
    settings: Settings,
    req: CycleRequest,
    stop: threading.Event | None = None,
    parent: str | None = None,
    report: monitor.Report | None = None,
) -> CycleResult:
    """One month: monitor (or take `report`, Production's monitoring of it), and retrain,
    gate and promote when the verdict says so. A month is decided once; with `redecide`
    (its data was re-published), once more for its new data."""
    req.check()
    cycle_live.check_serving(settings, req)
    digest = req.data_digest if req.redecide else None
    if (done := recorded(req.name, req.month, digest)) is not None:
        return done
    champion = version_in(req.name, "Production")
    if champion is None:
        raise DurationError(f"{req.name} has no Production version: run `make pipeline` first")
    with month_lock(settings, req.name, req.month):  # a month is decided once, anywhere
        if (done := recorded(req.name, req.month, digest)) is not None:  # while this waited
            return done
        if report is None or report.model_version != champion.version:
            uri = f"models:/{req.name}/{champion.version}"
            report = monitor.monitor(settings, uri, req.color, req.month)
        return _decide(settings, req, stop, parent, report)


def _decide(
    settings: Settings,
    req: CycleRequest,
    stop: threading.Event | None,
    parent: str | None,
    report: monitor.Report,
) -> CycleResult:
    """The month's decision, under its lease (`report`: Production's monitoring of it)."""
    champion = report.model_version
    result = CycleResult(
        month=req.month,
        verdict=report.verdict,
        action="kept",
        champion_version=champion,
        challenger_version=None,
        production_version=champion,
        rmse=report.rmse,
        drift_share=report.drift_share,
        reason=f"Production v{champion} is {report.verdict} on {req.month}",
    )
    if report.verdict != "ok":
        notify.verdict(settings, req, report.verdict, champion, report.rmse, report.drift_share)
    slices = None
    arm = cycle_live.candidate(settings, req.name) if req.role is not None else None
    if arm is not None:  # last month's challenger has served live: decide it first
        d = cycle_live.decide(settings, req, champion, arm)
        result.action = d.action
        result.production_version = d.production_version
        result.reason = d.reason
        result.challenger_version = arm.version
        result.gate_rmse_champion = d.gate_rmse_champion
        result.gate_rmse_challenger = d.gate_rmse_challenger
    elif report.verdict != "ok":
        slices = _retrain_and_gate(settings, req, stop, result)
    result.decision_run_id = _log(result, req, slices, parent)
    notify.decided(settings, req, result, live=arm is not None)
    return result


def _retrain_and_gate(
    settings: Settings, req: CycleRequest, stop: threading.Event | None, result: CycleResult
) -> pd.DataFrame | None:
    """Retrain, then gate the challenger against Production on the month under the promote
    lock; record it all in `result`. Returns the gate's slice table."""
    registered, result.train_months, result.val_month = retrain(settings, req, stop)
    challenger = registered.model_version
    result.challenger_version = challenger
    rides = prepare.load_processed(settings, req.color, req.month)
    with promote_lock(settings, req.name):
        current = version_in(req.name, "Production")
        c: Comparison = compare(
            settings, req.name, current.version, challenger, rides, req.color.value, req.rule
        )
        result.champion_version = current.version
        result.gate_rmse_champion, result.gate_rmse_challenger = (
            c.champion_rmse,
            c.challenger_rmse,
        )
        result.reason = c.verdict.reason
        _tag_gate(req.name, challenger, req.month, c.challenger_rmse)
        if c.verdict.promoted and req.role is None and req.hold:
            result.action = AWAITING_APPROVAL
            result.reason += f"; promoting v{challenger} waits for `duration automate approve "
            result.reason += f"{req.month}`"
        elif c.verdict.promoted and req.role is None:
            set_production(req.name, challenger)
            result.action, result.production_version = "promoted", challenger
        elif not c.verdict.promoted:
            result.action = "rejected"
    # outside the promote lock: serving follows the alias that moved
    if c.verdict.promoted and req.role is not None:
        result.reason += "; " + cycle_live.put_live(settings, req, challenger)
        result.action = req.live
    elif result.action == "promoted":  # moved under the lock: back to the champion if it fails
        before = Wanted(production=result.champion_version)
        cycle_live.follow_move(settings, req.name, lambda: None, before)
    return c.slices


def _tag_gate(name: str, version: str, month: str, rmse: float) -> None:
    """The challenger's honest test score is its RMSE on the gate month it never saw."""
    c = client()
    c.set_model_version_tag(name, version, "test_month", month)
    c.set_model_version_tag(name, version, "test_rmse", f"{rmse:.6f}")


def _log(r: CycleResult, req: CycleRequest, slices: pd.DataFrame | None, parent: str | None) -> str:
    """One decision run per (model, month), with the decision as a tag (for reruns)."""
    import mlflow  # deferred: MLflow takes seconds to import

    tags = {
        "model_name": req.name,
        "month": r.month,
        "verdict": r.verdict,
        "action": r.action,
        "champion_version": r.champion_version,
        "challenger_version": r.challenger_version or "",
        "production_version": r.production_version,
        "reason": r.reason,
        **({"data_digest": req.data_digest} if req.data_digest else {}),
        **runs.process_tags(),
        **({"mlflow.parentRunId": parent} if parent else {}),
    }
    with runs.active_run(
        experiment_id=experiments.experiment_id(CYCLE_EXPERIMENT),
        run_name=f"cycle-{r.month}",
        tags=tags,
    ) as active:
        metrics = {
            "gate_rmse_champion": r.gate_rmse_champion,
            "gate_rmse_challenger": r.gate_rmse_challenger,
            "rmse": r.rmse,
            "drift_share": r.drift_share,
        }
        mlflow.log_metrics(
            {k: v for k, v in metrics.items() if v is not None and not math.isnan(v)}
        )
        mlflow.log_params(
            {
                "trials": req.trials,
                "window": req.window,
                "min_improvement": req.rule.min_improvement,
                "max_slice_loss": req.rule.max_slice_loss,
            }
        )
        if slices is not None:
            with tempfile.TemporaryDirectory() as tmp:
                slices.to_csv(Path(tmp) / "gate_slices.csv", index=False)
                mlflow.log_artifacts(tmp, "cycle")
        r.decision_run_id = active.info.run_id
        mlflow.set_tag("decision", json.dumps(asdict(r)))
    return r.decision_run_id
