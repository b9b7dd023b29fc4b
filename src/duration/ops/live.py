"""The cycle's live mode: a challenger that passed the offline gate is put beside
Production as a shadow or a canary instead of being promoted; the next month's cycle then
decides on the live evidence (`ab report`) and the offline gate together.

- promote: both say so (the candidate finishes: registry and traffic);
- abort: the A/B report says abort, or the gate rejects it on the new month;
- continue: the report cannot tell yet, and the gate does not object (it stays live).
"""

from __future__ import annotations

from dataclasses import dataclass

from duration.core.schema import Color
from duration.data import prepare
from duration.errors import DurationError
from duration.infra import serving
from duration.ops import ab, rollout
from duration.ops.requests import CycleRequest
from duration.registry.lease import promote_lock
from duration.registry.promote import compare
from duration.settings import Settings


@dataclass(frozen=True, kw_only=True)
class LiveDecision:
    action: str  # promoted, aborted, continued
    production_version: str
    reason: str
    gate_rmse_champion: float | None
    gate_rmse_challenger: float
    ab_run_id: str


def check_serving(settings: Settings, req: CycleRequest) -> None:
    """Live mode needs the served model, before any work starts."""
    if req.live != "off" and not serving.running(settings):
        raise DurationError(
            f"--live {req.live} puts the challenger beside the served Production: nothing "
            "serves here, run `make serve` first (or --live off)"
        )


def candidate(settings: Settings, name: str) -> serving.Arm | None:
    """The canary or shadow of `name` serving here, if any."""
    state = serving.read_state(settings)
    return state.candidate if state is not None and state.name == name else None


def put_live(settings: Settings, req: CycleRequest, version: str) -> str:
    """Serve the challenger as the live mode says; what was done, in words."""
    weight = req.live_weight if req.live == "canary" else 0
    rollout.start(settings, req.name, version, req.live, weight, wait=600)
    share = f" for {weight}% of clients" if req.live == "canary" else ""
    return (f"v{version} serves as a {req.live}{share}; next month's cycle decides on its "
            "rides and the gate")  # fmt: skip


def decide(
    settings: Settings, req: CycleRequest, champion: str, arm: serving.Arm
) -> LiveDecision:  # fmt: skip
    """The live candidate, judged on `req.month`'s served rides and on the gate."""
    report = ab.report(settings, req.color, req.month, req.rule)
    rides = prepare.load_processed(settings, Color(req.color), req.month)
    with promote_lock(settings, req.name):
        c = compare(settings, req.name, champion, arm.version, rides, Color(req.color).value,
                    req.rule)  # fmt: skip
    said = f"a/b {report.decision} ({report.reason}); gate: {c.verdict.reason}"
    if report.decision == "promote" and c.verdict.promoted:
        rollout.finish(settings, req.name, wait=600)
        action, production = "promoted", arm.version
    elif report.decision == "abort" or not c.verdict.promoted:
        rollout.abort(settings, req.name, wait=600)
        action, production = "aborted", champion
    else:
        action, production = "continued", champion
    return LiveDecision(
        action=action, production_version=production, reason=said,
        gate_rmse_champion=c.champion_rmse, gate_rmse_challenger=c.challenger_rmse,
        ab_run_id=report.run_id,
    )  # fmt: skip
