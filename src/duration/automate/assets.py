"""The orchestrator's assets, one partition per TLC month: the month downloaded and verified,
then prepared, then Production monitored on it, then the month's decision (the cycle's
rule). Each materialisation carries its figures and links to its MLflow runs; every MLflow
run it starts is tagged `orchestrator_run_id`.

Each asset is a thin wrapper: the work is the project's own (`tlc.download`,
`prepare.prepare`, `monitor.monitor`, `cycle.run`).
"""

# No `from __future__ import annotations`: Dagster reads the assets' annotations as types.
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from duration.alerts.channel import Alert, Event, send
from duration.core.schema import Color
from duration.data import prepare, tlc
from duration.ops import cycle, monitor
from duration.ops.decision import recorded
from duration.ops.specs import CycleRequest
from duration.registry.uris import quiet_stage_notice, version_in
from duration.settings import Settings
from duration.tracking import client
from duration.tracking.experiments import experiment_id
from duration.tracking.names import CYCLE_EXPERIMENT, MODEL_NAME, MONITOR_EXPERIMENT
from duration.tracking.runs import ORCHESTRATOR_RUN_ENV

MODEL_ENV = "DURATION_AUTOMATE_MODEL"  # set by `duration automate start --name`
DIGEST_TAG = "duration/digest"
PREVIOUS_TAG = "duration/previous_digest"


@dataclass(frozen=True, kw_only=True)
class Month:
    """What a run works on: the settings, the model, the month, and its data."""

    settings: Settings
    name: str
    color: Color
    month: str
    digest: str
    previous_digest: str

    def link(self, experiment: str, run_id: str) -> "dg.MetadataValue[str]":
        url = self.settings.tracking.url.rstrip("/")
        return dg.MetadataValue.url(
            f"{url}/#/experiments/{experiment_id(experiment)}/runs/{run_id}"
        )


def months(first: str) -> dg.MonthlyPartitionsDefinition:
    """One partition per TLC month, from the first training month on (to this month)."""
    return dg.MonthlyPartitionsDefinition(start_date=first, fmt="%Y-%m", end_offset=1)


def connected() -> tuple[Settings, str, Any]:
    """The settings from the environment, with the MLflow client set up; the model's name
    and its Production version (None: none yet)."""
    settings = Settings.from_env()
    client.configure()
    quiet_stage_notice()
    client.use(settings.tracking.url)
    name = os.environ.get(MODEL_ENV) or MODEL_NAME
    return settings, name, version_in(name, "Production")


def month_of(context: dg.AssetExecutionContext) -> Month:
    """The run's month, with its MLflow client set up and its runs tagged with this run."""
    os.environ[ORCHESTRATOR_RUN_ENV] = context.run_id
    settings, name, production = connected()
    tags = context.run.tags
    return Month(
        settings=settings,
        name=name,
        color=Color(production.tags.get("color", "green") if production else "green"),
        month=context.partition_key,
        digest=tags.get(DIGEST_TAG, ""),
        previous_digest=tags.get(PREVIOUS_TAG, ""),
    )


def tlc_month(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The month's TLC file, downloaded into data/raw and verified (a re-published month is
    downloaded again, and said)."""
    m = month_of(context)
    if m.previous_digest:
        send(
            m.settings,
            Alert(
                event=Event.republished,
                text=f"the TLC published {m.color.value} {m.month} again: new data "
                f"{m.digest[:12]} (was {m.previous_digest[:12]}); it is monitored again",
                fields={"month": m.month, "digest": m.digest, "previous_digest": m.previous_digest},
                key=f"{m.month}|{m.digest}",
            ),
        )
    path = tlc.download(m.settings, m.color, m.month, progress=False, fresh=bool(m.previous_digest))
    rows = tlc.verify_parquet(path)
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "bytes": path.stat().st_size,
            "digest": m.digest,
            "source": tlc.trip_url(m.settings, m.color, m.month),
        }
    )


def prepared_month(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The month's rides of 1-60 minutes that meet the serving rules (data/processed)."""
    m = month_of(context)
    path = prepare.prepare(m.settings, m.color, m.month)
    rides = prepare.load_processed(m.settings, m.color, m.month, columns=["duration"])
    return dg.MaterializeResult(metadata={"rides": len(rides), "path": str(path)})


def production_monitoring(context: dg.AssetExecutionContext) -> dg.Output[monitor.Report]:
    """Production on the month: quality, drift and the verdict (a run of the monitoring
    experiment, naming the month's data)."""
    m = month_of(context)
    production = version_in(m.name, "Production")
    if production is None:
        raise dg.Failure(f"{m.name} has no Production version: run `make pipeline` first")
    data = {"data_digest": m.digest} if m.digest else {}
    if m.previous_digest:
        data["previous_digest"] = m.previous_digest
    uri = f"models:/{m.name}/{production.version}"
    r = monitor.monitor(m.settings, uri, m.color, m.month, data)
    return dg.Output(
        r,
        metadata={
            "version": r.model_version,
            "rmse": r.rmse,
            "rmse_ratio": r.rmse_ratio,
            "drift_share": r.drift_share,
            "verdict": r.verdict,
            "rides": r.rows,
            "mlflow_run": m.link(MONITOR_EXPERIMENT, r.run_id),
        },
    )


def month_decision(
    context: dg.AssetExecutionContext, production_monitoring: monitor.Report
) -> dg.MaterializeResult:
    """The month's decision, by the cycle's rule: keep; retrain, gate, then promote (or put
    live); or decide last month's live arm on this month's served rides."""
    m = month_of(context)
    a = m.settings.automate
    earlier = recorded(m.name, m.month)
    verdict = production_monitoring.verdict
    if m.previous_digest and earlier is not None and earlier.verdict == verdict:
        return dg.MaterializeResult(  # re-published, same verdict: the decision stands
            metadata={
                "verdict": verdict,
                "action": f"stands ({earlier.action})",
                "production_version": earlier.production_version,
                "mlflow_run": m.link(CYCLE_EXPERIMENT, earlier.decision_run_id),
            }
        )
    req = CycleRequest(
        month=m.month,
        color=m.color,
        name=m.name,
        trials=a.trials,
        window=a.window,
        live=a.live,
        live_weight=a.live_weight,
        hold=a.approve == "manual",
        data_digest=m.digest,
        redecide=bool(m.previous_digest and earlier is not None),
    )
    r = cycle.run(m.settings, req, report=production_monitoring)
    numbers = {
        "rmse": r.rmse,
        "drift_share": r.drift_share,
        "gate_rmse_champion": r.gate_rmse_champion,
        "gate_rmse_challenger": r.gate_rmse_challenger,
    }
    return dg.MaterializeResult(
        metadata={
            "verdict": r.verdict,
            "action": r.action,
            "production_version": r.production_version,
            "challenger_version": r.challenger_version or "",
            "reason": r.reason,
            **{k: v for k, v in numbers.items() if v is not None},
            "mlflow_run": m.link(CYCLE_EXPERIMENT, r.decision_run_id),
        }
    )


def assets(partitions: dg.PartitionsDefinition[str]) -> list[dg.AssetsDefinition]:
    """The four assets, chained, over `partitions` (the months)."""

    def make(
        fn: Callable[..., object], kind: str, deps: list[str] | None = None
    ) -> dg.AssetsDefinition:
        made = dg.asset(partitions_def=partitions, group_name="monthly", kinds={kind}, deps=deps)
        return made(fn)

    return [
        make(tlc_month, "parquet"),
        make(prepared_month, "parquet", ["tlc_month"]),
        make(production_monitoring, "mlflow", ["prepared_month"]),
        make(month_decision, "mlflow"),
    ]
