"""The monthly cycle: monitor a new labelled month with Production; when it drifted or
degraded, retrain on the latest labelled months before it, and promote the challenger only
if it beats Production on that month, which it never saw.

Invariant: the gate month is not among the months the challenger was trained, early-stopped,
searched or selected on. It appears on the decision run only.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field

import pandas as pd

from duration import data, matrices, monitor, registry, tracking, tune
from duration.config import (
    CYCLE_EXPERIMENT,
    MODEL_NAME,
    Color,
    FeatureSet,
    ModelKind,
    Settings,
    check_month,
)
from duration.errors import DurationError, NotPublished, Stopped

LOOKBACK = 36  # months searched back for labelled months the source has
MAX_WINDOW = 12  # labelled months a retrain may use (all but the newest train)
MIN_SLICE_RIDES = 500  # slices smaller than this are too noisy to veto a promotion


@dataclass(frozen=True)
class CycleRequest:
    """One month's cycle: what to monitor, and how to retrain if needed."""

    month: str
    color: Color = Color.green
    name: str = MODEL_NAME
    trials: int = 10
    window: int = 2
    min_improvement: float = 0.0
    max_slice_loss: float = 0.1  # no slice's RMSE may grow by more than this share
    max_rounds: int | None = None
    seed: int = 42
    features: FeatureSet = FeatureSet.default


@dataclass
class CycleResult:
    """What the cycle decided for one month (the `--summary` JSON)."""

    month: str
    verdict: str
    action: str  # kept, promoted, rejected
    champion_version: str
    challenger_version: str | None
    production_version: str
    gate_rmse_champion: float | None = None
    gate_rmse_challenger: float | None = None
    rmse: float | None = None
    drift_share: float | None = None
    reason: str = ""
    train_months: list[str] = field(default_factory=list)
    val_month: str | None = None
    decision_run_id: str = ""
    repeated: bool = False


def labelled_months(settings: Settings, color: Color | str, before: str, count: int) -> list[str]:
    """The latest `count` months before `before` that the source has, oldest first."""
    found: list[str] = []
    month = before
    for _ in range(LOOKBACK):
        y, m = map(int, month.split("-"))
        month = f"{y - 1:04d}-12" if m == 1 else f"{y:04d}-{m - 1:02d}"
        try:
            data.prepare(settings, color, month)
        except NotPublished:
            continue  # a gap in the source: a broken download or file still fails here
        found.append(month)
        if len(found) == count:
            return found[::-1]
    raise DurationError(
        f"only {len(found)} labelled month(s) before {before} in the last {LOOKBACK} months "
        f"at {settings.tlc_url}: the cycle needs {count} (--window) to retrain"
    )


def recorded(name: str, month: str) -> dict | None:
    """The decision already taken for (model, month), if a cycle finished it before."""
    import json

    exp = tracking.client().get_experiment_by_name(CYCLE_EXPERIMENT)
    if exp is None:
        return None
    runs = tracking.client().search_runs(
        [exp.experiment_id],
        f"tags.model_name = '{name}' and tags.month = '{month}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return json.loads(runs[0].data.tags["decision"]) if runs else None


def gate(
    champion: str, challenger: str, rides: pd.DataFrame, color: str, settings: Settings
) -> tuple[float, float, pd.DataFrame]:
    """Both versions' (NAME/VERSION) RMSE on the gate month, and per slice side by side."""
    zones = monitor.borough_map(settings)
    y = rides["duration"].to_numpy()
    out, tables = [], []
    for role, version in (("champion", champion), ("challenger", challenger)):
        pred = registry.predict_frame(registry.load(f"models:/{version}"), rides, color)
        out.append(tracking.scores(y, pred)["rmse"])
        t = monitor.slice_table(rides, pred, zones).set_index(["slice_by", "slice"])
        tables.append(t[["rides", "rmse"]].rename(columns={"rmse": f"rmse_{role}"}))
    slices = tables[0].join(tables[1].drop(columns="rides")).reset_index()
    slices["change"] = slices["rmse_challenger"] / slices["rmse_champion"] - 1
    return out[0], out[1], slices


def decide(cp: float, ch: float, slices: pd.DataFrame, req: CycleRequest) -> tuple[bool, str]:
    """Promote only a real improvement that leaves no sizeable slice much worse."""
    if not cp - ch > req.min_improvement:
        return False, (
            f"challenger RMSE {ch:.4f} does not beat champion {cp:.4f} by more than "
            f"{req.min_improvement}"
        )
    big = slices[slices["rides"] >= MIN_SLICE_RIDES]
    worse = big[big["change"] > req.max_slice_loss]
    if not worse.empty:
        w = worse.sort_values("change").iloc[-1]
        return False, (
            f"challenger RMSE {ch:.4f} beats {cp:.4f}, but on {w['slice_by']} {w['slice']} "
            f"it is {w['change']:.0%} worse (more than {req.max_slice_loss:.0%})"
        )
    return True, f"challenger RMSE {ch:.4f} beats champion {cp:.4f} with no slice much worse"


def retrain(
    settings: Settings, req: CycleRequest, stop: threading.Event | None
) -> tuple[registry.Registered, list[str], str]:
    """Search on the window before the month (the older months train, the newest validates),
    register the best by validation RMSE in Staging, never looking at the month itself."""
    window = labelled_months(settings, req.color, req.month, req.window)
    train, val = "+".join(window[:-1]), window[-1]
    matrices.vectorize(settings, req.color, req.features, train, [val])
    inp = matrices.load_inputs(settings, req.color, req.features, train, val)
    config = tune.SearchConfig(
        ModelKind.xgboost, req.trials, req.seed, max_rounds=req.max_rounds, progress=False
    )
    found = tune.search(inp, config, stop)
    if found.status == "KILLED":
        raise Stopped(
            f"the retraining search for {req.month} was stopped ({found.stopped}): no version "
            "was registered and no decision recorded; run the month again to decide it"
        )
    reg = registry.register(settings, None, req.name, parent_run_id=found.parent_run_id)
    return reg, window[:-1], val


def check(req: CycleRequest) -> None:
    """One line for a cycle that cannot run as asked."""
    check_month(req.month)
    if not 2 <= req.window <= MAX_WINDOW:
        raise DurationError(
            f"--window {req.window}: give 2 to {MAX_WINDOW} labelled months (the older ones "
            "train, the newest validates)"
        )
    if req.trials < 1:
        raise DurationError(f"--trials {req.trials}: the search needs at least 1 trial")
    if req.min_improvement < 0:
        raise DurationError(f"--min-improvement {req.min_improvement}: give 0 or more")


def replay(
    settings: Settings,
    req: CycleRequest,
    start: str,
    end: str,
    stop: threading.Event | None = None,
    say=print,
) -> list[CycleResult]:
    """The cycle for each month from `start` to `end` in order, skipping (in one line each)
    months the source does not have; one replay run holds the decision runs and a plot."""
    from dataclasses import replace

    check_month(start, "--from")
    check_month(end, "--to")
    if start > end:
        raise DurationError(f"--from {start} is after --to {end}: give them in order")
    exp = tracking.experiment_id(CYCLE_EXPERIMENT)
    parent = (
        tracking.client()
        .create_run(
            exp,
            run_name=f"replay-{start}-{end}",
            tags={"model_name": req.name, **tracking.process_tags()},
        )
        .info.run_id
    )
    results: list[CycleResult] = []
    with tracking.ended(lambda status: tracking.client().set_terminated(parent, status)):
        for month in monitor.months(start, end):
            if stop is not None and stop.is_set():
                raise Stopped(f"the replay was stopped before {month}: the months before it "
                              "are decided; replay from it to go on")  # fmt: skip
            try:
                data.download(settings, req.color, month, progress=False)
            except NotPublished:
                say(f"{month}: skipped: {settings.tlc_url} has no {req.color.value} {month}")
                continue
            results.append(run(settings, replace(req, month=month), stop, parent))
            say(row(results[-1]))
        _log_history(parent, results)
    return results


ROW = "{month:8}  {production:>10}  {rmse:>7}  {drift:>5}  {verdict:8}  {action}"


def row(r: CycleResult | None) -> str:
    """One line of the replay table (its header for None)."""
    if r is None:
        return ROW.format(month="month", production="Production", rmse="RMSE", drift="drift",
                          verdict="verdict", action="action")  # fmt: skip
    return ROW.format(
        month=r.month, production=f"v{r.champion_version}", rmse=f"{r.rmse:.4f}",
        drift=f"{r.drift_share:.2f}", verdict=r.verdict,
        action=r.action + (f" v{r.challenger_version}" if r.challenger_version else ""),
    )  # fmt: skip


def _log_history(parent: str, results: list[CycleResult]) -> None:
    """The replay's table and its RMSE and drift plot, on the replay run."""
    import tempfile
    from pathlib import Path

    from duration import plots

    if not results:
        return
    table = pd.DataFrame([asdict(r) for r in results])
    fig = plots.history(
        list(table["month"]), list(table["rmse"]), list(table["drift_share"]),
        list(table["action"] == "promoted"),
    )  # fmt: skip
    plots.log_figure(fig, "plots/history.png", run_id=parent)
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / "replay.csv", index=False)
        tracking.client().log_artifact(parent, str(Path(tmp) / "replay.csv"), "cycle")


def run(
    settings: Settings,
    req: CycleRequest,
    stop: threading.Event | None = None,
    parent: str | None = None,
) -> CycleResult:
    """One month: monitor, and retrain, gate and promote when the verdict says so."""
    check(req)
    if (done := recorded(req.name, req.month)) is not None:
        return CycleResult(**{**done, "repeated": True})
    champion = registry.version_in(req.name, "Production")
    if champion is None:
        raise DurationError(f"{req.name} has no Production version: run `make pipeline` first")
    report = monitor.monitor(
        settings, f"models:/{req.name}/{champion.version}", req.color, req.month
    )
    result = CycleResult(
        req.month, report.verdict, "kept", champion.version, None, champion.version,
        rmse=report.rmse, drift_share=report.drift_share,
        reason=f"Production v{champion.version} is {report.verdict} on {req.month}",
    )  # fmt: skip
    slices = None
    if report.verdict != "ok":
        reg, result.train_months, result.val_month = retrain(settings, req, stop)
        result.challenger_version = reg.model_version
        rides = data.load_processed(settings, req.color, req.month)
        with registry.promote_lock(settings, req.name):
            current = registry.version_in(req.name, "Production")
            cp, ch, slices = gate(
                f"{req.name}/{current.version}", f"{req.name}/{reg.model_version}", rides,
                req.color.value, settings,
            )  # fmt: skip
            result.champion_version = current.version
            result.gate_rmse_champion, result.gate_rmse_challenger = cp, ch
            promoted, result.reason = decide(cp, ch, slices, req)
            _tag_gate(req.name, reg.model_version, req.month, ch)
            if promoted:
                registry.set_production(req.name, reg.model_version)
                result.action, result.production_version = "promoted", reg.model_version
            else:
                result.action = "rejected"
    result.decision_run_id = _log(result, req, slices, parent)
    return result


def _tag_gate(name: str, version: str, month: str, rmse: float) -> None:
    """The challenger's honest test score is its RMSE on the gate month it never saw."""
    c = tracking.client()
    c.set_model_version_tag(name, version, "test_month", month)
    c.set_model_version_tag(name, version, "test_rmse", f"{rmse:.6f}")


def _log(r: CycleResult, req: CycleRequest, slices: pd.DataFrame | None, parent) -> str:
    """One decision run per (model, month), with the decision as a tag (for reruns)."""
    import json
    import tempfile
    from pathlib import Path

    import mlflow

    tags = {
        "model_name": req.name, "month": r.month, "verdict": r.verdict, "action": r.action,
        "champion_version": r.champion_version,
        "challenger_version": r.challenger_version or "",
        "production_version": r.production_version, "reason": r.reason,
        **tracking.process_tags(), **({"mlflow.parentRunId": parent} if parent else {}),
    }  # fmt: skip
    with tracking.active_run(
        experiment_id=tracking.experiment_id(CYCLE_EXPERIMENT),
        run_name=f"cycle-{r.month}",
        tags=tags,
    ) as run:
        metrics = {
            "gate_rmse_champion": r.gate_rmse_champion,
            "gate_rmse_challenger": r.gate_rmse_challenger,
            "rmse": r.rmse, "drift_share": r.drift_share,
        }  # fmt: skip
        mlflow.log_metrics(
            {k: v for k, v in metrics.items() if v is not None and not math.isnan(v)}
        )
        mlflow.log_params({"trials": req.trials, "window": req.window,
                           "min_improvement": req.min_improvement,
                           "max_slice_loss": req.max_slice_loss})  # fmt: skip
        if slices is not None:
            with tempfile.TemporaryDirectory() as tmp:
                slices.to_csv(Path(tmp) / "gate_slices.csv", index=False)
                mlflow.log_artifacts(tmp, "cycle")
        r.decision_run_id = run.info.run_id
        mlflow.set_tag("decision", json.dumps(asdict(r)))
    return r.decision_run_id
