"""What the cycle tells a person, through the alert channel: a month that drifted or
degraded, a retrain and its gate, a live arm's A/B decision, a decision that waits for
approval. Each alert is keyed by its event, model and month (and the month's data), so a
retried run sends it once."""

from __future__ import annotations

from duration.alerts.channel import Alert, Event, Value, send
from duration.ops.decision import CycleResult
from duration.ops.specs import AWAITING_APPROVAL, CycleRequest
from duration.settings import Settings


def _send(settings: Settings, req: CycleRequest, event: Event, text: str, **fields: Value) -> None:
    key = f"{req.name}|{req.month}|{req.data_digest}"
    base: dict[str, Value] = {"model_name": req.name, "month": req.month}
    send(settings, Alert(event=event, text=text, fields={**base, **fields}, key=key))


def verdict(
    settings: Settings,
    req: CycleRequest,
    verdict: str,
    champion: str,
    rmse: float,
    drift_share: float,
) -> None:
    """A month on which Production drifted or degraded."""
    event = Event.degraded if verdict == "degraded" else Event.drifted
    text = (
        f"{req.name} v{champion} is {verdict} on {req.month}: RMSE {rmse:.4f} min, drift "
        f"share {drift_share:.2f}"
    )
    _send(settings, req, event, text, version=champion, rmse=rmse, drift_share=drift_share)


def decided(settings: Settings, req: CycleRequest, r: CycleResult, live: bool) -> None:
    """The month's decision, when it did more than keep Production."""
    fields: dict[str, Value] = {
        "action": r.action,
        "champion_version": r.champion_version,
        "challenger_version": r.challenger_version,
        "production_version": r.production_version,
        "gate_rmse_champion": r.gate_rmse_champion,
        "gate_rmse_challenger": r.gate_rmse_challenger,
        "decision_run_id": r.decision_run_id,
    }
    said = f"{req.name} {req.month}: {r.action}"
    if live:
        _send(
            settings,
            req,
            Event.ab_decision,
            f"{said} v{r.challenger_version}: {r.reason}",
            **fields,
        )
    elif r.challenger_version is not None:
        text = (
            f"{said} (retrained v{r.challenger_version} on {', '.join(r.train_months)}): {r.reason}"
        )
        _send(settings, req, Event.retrained, text, **fields)
    if r.action == AWAITING_APPROVAL:
        text = f"{said}: run `duration automate approve {req.month}` to go on"
        _send(settings, req, Event.approval, text, **fields)
