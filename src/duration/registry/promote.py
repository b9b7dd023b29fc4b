"""Promote a challenger to Production through the one gate (`core.gate`), used by
`duration promote` and the monthly cycle alike: score both versions on the same labelled
rides, compare them overall and by slice, record the decision, move the stages."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd

from duration.core.gate import GateRule, Verdict, gate
from duration.core.metrics import compare_slices
from duration.core.schema import check_month
from duration.data import prepare, tlc
from duration.errors import DurationError
from duration.registry.evaluation import evaluate
from duration.registry.lease import promote_lock
from duration.registry.uris import move, require, set_production, version_in
from duration.settings import Settings
from duration.tracking import experiments, runs
from duration.tracking.client import client
from duration.tracking.names import MODEL_NAME, PROMOTION_EXPERIMENT


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Champion and challenger on the same rides, and what the gate made of it."""

    challenger: str
    champion: str | None
    challenger_rmse: float
    champion_rmse: float | None
    slices: pd.DataFrame | None  # side by side (compare_slices), when there is a champion
    verdict: Verdict


def compare(
    settings: Settings,
    name: str,
    champion: str | None,
    challenger: str,
    rides: pd.DataFrame,
    color: str,
    rule: GateRule,
) -> Comparison:
    """Score both versions of `name` on `rides` and apply the gate."""
    boroughs = tlc.boroughs(settings)
    ch = evaluate(f"models:/{name}/{challenger}", rides, color, boroughs)
    cp = evaluate(f"models:/{name}/{champion}", rides, color, boroughs) if champion else None
    slices = compare_slices(cp.slices, ch.slices) if cp else None
    verdict = gate(
        challenger=challenger,
        champion=champion,
        challenger_rmse=ch.rmse,
        champion_rmse=cp.rmse if cp else None,
        slices=slices,
        rule=rule,
    )
    return Comparison(
        challenger=challenger,
        champion=champion,
        challenger_rmse=ch.rmse,
        champion_rmse=cp.rmse if cp else None,
        slices=slices,
        verdict=verdict,
    )


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The outcome of `promote`."""

    model_name: str
    challenger: str
    champion: str
    month: str
    challenger_rmse: float
    champion_rmse: float | None
    promoted: bool
    reason: str
    production: str


def promote(
    settings: Settings,
    name: str = MODEL_NAME,
    month: str | None = None,
    rule: GateRule | None = None,
) -> Decision:
    """Promote Staging to Production only if it passes the gate on `month` (default: the
    challenger's test month) against Production.

    Two promotes at once, on one host or several, run one after the other: the second
    decides on what the first left, and says it lost when it promotes nothing.
    """
    require(name, "run `duration register` first")
    with promote_lock(settings, name) as waited:
        d = _promote(settings, name, month, rule or GateRule())
    if waited and not d.promoted:
        reason = f"lost to another promote of {name} that ran at the same time: {d.reason}"
        d = replace(d, reason=reason)
    return d


def _promote(settings: Settings, name: str, month: str | None, rule: GateRule) -> Decision:
    """Score Staging and Production on `month`, record the decision and move the stages."""
    challenger = version_in(name, "Staging")
    champion = version_in(name, "Production")
    if challenger is None:
        if champion is None:
            raise DurationError(f"{name} has no version in Staging: run `duration register` first")
        reason = (
            f"nothing to promote: no Staging version; version {champion.version} "
            "stays in Production"
        )
        return Decision(
            model_name=name,
            challenger="",
            champion=champion.version,
            month=month or "",
            challenger_rmse=math.nan,
            champion_rmse=None,
            promoted=False,
            reason=reason,
            production=champion.version,
        )
    month = check_month(month or challenger.tags.get("test_month", ""), "--month")
    color = challenger.tags.get("color", "green")
    rides = prepare.load_processed(settings, color, month)
    cp = champion.version if champion else None
    c = compare(settings, name, cp, challenger.version, rides, color, rule)
    d = Decision(
        model_name=name,
        challenger=challenger.version,
        champion=cp or "",
        month=month,
        challenger_rmse=c.challenger_rmse,
        champion_rmse=c.champion_rmse,
        promoted=c.verdict.promoted,
        reason=c.verdict.reason,
        production=challenger.version if c.verdict.promoted else cp or "",
    )
    _record(d, rule)
    return d


def _record(d: Decision, rule: GateRule) -> None:
    """Log the decision as a run, tag both versions, and move the stages if promoted."""
    import mlflow  # deferred: MLflow takes seconds to import

    c, name = client(), d.model_name
    with runs.active_run(
        experiment_id=experiments.experiment_id(PROMOTION_EXPERIMENT),
        run_name=f"promote-v{d.challenger}",
        tags={
            "model_name": name,
            "challenger_version": d.challenger,
            "champion_version": d.champion,
            "month": d.month,
            **runs.process_tags(),
        },
    ):
        metrics = {"challenger_rmse": d.challenger_rmse}
        if d.champion_rmse is not None:
            metrics["champion_rmse"] = d.champion_rmse
        mlflow.log_metrics(metrics)
        mlflow.log_params(
            {
                "min_improvement": rule.min_improvement,
                "max_slice_loss": rule.max_slice_loss,
                "promoted": d.promoted,
            }
        )
        mlflow.set_tag("reason", d.reason)
        c.set_model_version_tag(name, d.challenger, f"rmse_{d.month}", f"{d.challenger_rmse:.6f}")
        c.set_model_version_tag(
            name, d.challenger, "promotion_decision", "promoted" if d.promoted else "rejected"
        )
        if d.champion and d.champion_rmse is not None:
            c.set_model_version_tag(name, d.champion, f"rmse_{d.month}", f"{d.champion_rmse:.6f}")
        if d.promoted:
            _swap(name, d.challenger, d.champion or None)


def _swap(name: str, new: str, old: str | None) -> None:
    """Challenger -> Production, champion -> Archived (alias removed); undone on failure."""
    try:
        set_production(name, new)
    except Exception:
        move(name, new, "Staging")
        if old is not None:
            move(name, old, "Production")
        raise
