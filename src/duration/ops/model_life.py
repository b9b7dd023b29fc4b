"""The model's life, month by month, gathered from what was recorded: monitoring runs (the
Production version, its offline RMSE, verdict and drift), the cycle's decisions, the A/B
runs and the served-monitoring runs (the served RMSE per arm), and the prediction log (the
served volume and latency, by the rides' month). No figure is computed a second way: each
comes from the run or the log that holds it. `duration report` draws it
and logs the page as a run's artifact (`duration.ops.life_page`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from duration.core.schema import month_range
from duration.errors import DurationError
from duration.serving import log_read
from duration.settings import Settings
from duration.tracking.names import (
    AB_EXPERIMENT,
    CYCLE_EXPERIMENT,
    MONITOR_EXPERIMENT,
)

_RIDE = re.compile(r"^([a-z]+)-(\d{4}-\d{2})-")  # a ride_id: color-YYYY-MM-row


@dataclass(frozen=True, kw_only=True)
class ServedArm:
    """One version's served RMSE on a month's labelled rides (CI where an A/B run has it)."""

    version: str
    role: str  # production, canary, shadow, or "served" (monitor --served, no arm split)
    rmse: float
    ci_low: float | None = None
    ci_high: float | None = None
    rides: int = 0


@dataclass(frozen=True, kw_only=True)
class Month:
    """One month of the model's life."""

    month: str
    production_version: str
    offline_rmse: float
    verdict: str
    monitoring_run: str
    decision: str = ""  # the cycle's action: keep, promote, live, finish, abort...
    drift: dict[str, float] = field(default_factory=dict)  # column -> score
    served: list[ServedArm] = field(default_factory=list)
    served_rides: int = 0  # answered rides of this month, in the prediction log
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass(frozen=True, kw_only=True)
class Life:
    name: str
    months: list[Month]


def _search(experiment: str, where: str) -> Any:
    import mlflow  # deferred: MLflow takes seconds to import

    return mlflow.search_runs(
        experiment_names=[experiment], filter_string=where, order_by=["start_time DESC"]
    )


def _newest(frame: Any, month: str) -> Any | None:
    """The newest finished run of `month` (frames come newest first), or None."""
    if frame.empty or "tags.month" not in frame:
        return None
    rows = frame[(frame["tags.month"] == month) & (frame["status"] == "FINISHED")]
    return None if rows.empty else rows.iloc[0]


def _number(row: Any, key: str) -> float | None:
    value = row.get(key) if row is not None else None
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _served(month: str, ab: Any, served: Any) -> list[ServedArm]:
    """The served RMSE per arm: from the month's A/B run (with CIs), else its served run."""
    if (row := _newest(ab, month)) is not None:
        arms = []
        for role, version in (
            ("production", row.get("tags.production_version")),
            (row.get("tags.role"), row.get("tags.candidate_version")),
        ):
            prefix = str(role)  # the A/B run's metrics: {role}_rmse, {role}_ci_low...
            rmse = _number(row, f"metrics.{prefix}_rmse")
            if rmse is not None and version:
                arms.append(
                    ServedArm(
                        version=str(version),
                        role=str(role),
                        rmse=float(rmse),
                        ci_low=_number(row, f"metrics.{prefix}_ci_low"),
                        ci_high=_number(row, f"metrics.{prefix}_ci_high"),
                        rides=int(_number(row, f"metrics.{prefix}_rides") or 0),
                    )
                )
        return arms
    if (row := _newest(served, month)) is None:
        return []
    out = []
    for version in str(row.get("tags.model_versions") or "").split(","):
        if version and (rmse := _number(row, f"metrics.v{version}_rmse")) is not None:
            rides = int(_number(row, f"metrics.v{version}_served_rides") or 0)
            out.append(ServedArm(version=version, role="served", rmse=float(rmse), rides=rides))
    return out


def _traffic(settings: Settings) -> dict[str, tuple[int, float | None, float | None]]:
    """Per rides' month: answered rides, p50 and p99 latency (ms), from the prediction log."""
    table = log_read.read(settings.paths.serve_log).table
    if table.num_rows == 0 or "ride_id" not in table.column_names:
        return {}
    ids = table.column("ride_id").to_pylist()
    latency = np.asarray(table.column("latency_ms").to_pylist(), dtype=float)
    by_month: dict[str, list[int]] = {}
    for i, ride in enumerate(ids):
        if ride and (m := _RIDE.match(ride)):
            by_month.setdefault(m.group(2), []).append(i)
    return {
        month: (
            len(rows),
            float(np.percentile(latency[rows], 50)),
            float(np.percentile(latency[rows], 99)),
        )
        for month, rows in by_month.items()
    }


def unmeasured(settings: Settings, name: str, start: str, end: str) -> dict[str, str]:
    """The months (and their rides' color) with served rides in the log but no served RMSE
    recorded yet (no A/B run of `name`, no served-monitoring run): `duration monitor
    --served` gives it."""
    table = log_read.read(settings.paths.serve_log).table
    if table.num_rows == 0 or "ride_id" not in table.column_names:
        return {}
    seen = {}
    for ride in set(table.column("ride_id").to_pylist()):
        if ride and (m := _RIDE.match(ride)):
            seen[m.group(2)] = m.group(1)
    ab = _search(AB_EXPERIMENT, f"tags.model_name = '{name}'")
    served = _search(MONITOR_EXPERIMENT, "tags.kind = 'served'")
    return {
        m: seen[m]
        for m in month_range(start, end)
        if m in seen and _newest(ab, m) is None and _newest(served, m) is None
    }


def gather(settings: Settings, name: str, start: str, end: str) -> Life:
    """The life of `name` from `start` to `end`; a one-line error naming the months that
    have no monitoring run, and what to run."""
    months = month_range(start, end)  # in order: `duration.ops.specs.check_range`
    monitoring = _search(MONITOR_EXPERIMENT, f"tags.model_name = '{name}'")
    if not monitoring.empty and "tags.kind" in monitoring:
        monitoring = monitoring[monitoring["tags.kind"].isna()]
    missing = [m for m in months if _newest(monitoring, m) is None]
    if missing:
        shown = ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else "")
        raise DurationError(
            f"{name} has no monitoring run for {shown}: run `duration monitor --month M` for "
            f"each (or `make monitor-months FROM={missing[0]} TO={missing[-1]}`), or narrow "
            "--from/--to"
        )
    cycle = _search(CYCLE_EXPERIMENT, f"tags.model_name = '{name}'")
    ab = _search(AB_EXPERIMENT, f"tags.model_name = '{name}'")
    served = _search(MONITOR_EXPERIMENT, "tags.kind = 'served'")
    traffic = _traffic(settings)
    out = []
    for month in months:
        run: Any = _newest(monitoring, month)  # there is one: checked above
        decided = _newest(cycle, month)
        rides, p50, p99 = traffic.get(month, (0, None, None))
        drift = {
            k.removeprefix("metrics.drift_"): float(v)
            for k, v in run.items()
            if k.startswith("metrics.drift_") and k != "metrics.drift_share" and _number(run, k)
        }
        out.append(
            Month(
                month=month,
                production_version=str(run["tags.model_version"]),
                offline_rmse=float(run["metrics.rmse"]),
                verdict=str(run.get("tags.verdict") or ""),
                monitoring_run=str(run["run_id"]),
                decision=str(decided.get("tags.action") or "") if decided is not None else "",
                drift=drift,
                served=_served(month, ab, served),
                served_rides=rides,
                p50_ms=p50,
                p99_ms=p99,
            )
        )
    return Life(name=name, months=out)
