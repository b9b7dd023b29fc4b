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
from duration.ops import ab, arms
from duration.ops.specs import CycleRequest
from duration.registry.lease import promote_lock
from duration.registry.promote import compare
from duration.serving import service
from duration.serving.state import Arm, Role, read_state
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
    if req.role is not None and not service.running(settings):
        raise DurationError(
            f"--live {req.live} puts the challenger beside the served Production: nothing "
            "serves here, run `make serve` first (or --live off)"
        )


def candidate(settings: Settings, name: str) -> Arm | None:
    """The canary or shadow of `name` serving here, if any."""
    state = read_state(settings)
    return state.candidate if state is not None and state.name == name else None


def put_live(settings: Settings, req: CycleRequest, version: str) -> str:
    """Serve the challenger as the live mode says; what was done, in words."""
    role = req.role
    if role is None:
        raise DurationError("the cycle's live mode is off: nothing to put live")
    weight = req.live_weight if role is Role.canary else 0
    arms.start(settings, req.name, version, role, weight, wait=600)
    share = f" for {weight}% of clients" if role is Role.canary else ""
    then = "next month's cycle decides on its rides and the gate"
    return f"v{version} serves as a {role}{share}; {then}"


def decide(settings: Settings, req: CycleRequest, champion: str, arm: Arm) -> LiveDecision:
    """The live candidate, judged on `req.month`'s served rides and on the gate."""
    report = ab.report(settings, req.color, req.month, req.rule)
    color = Color(req.color)
    rides = prepare.load_processed(settings, color, req.month)
    with promote_lock(settings, req.name):
        c = compare(settings, req.name, champion, arm.version, rides, color.value, req.rule)
    said = f"a/b {report.decision} ({report.reason}); gate: {c.verdict.reason}"
    if report.decision == "promote" and c.verdict.promoted:
        arms.finish(settings, req.name, wait=600)
        action, production = "promoted", arm.version
    elif report.decision == "abort" or not c.verdict.promoted:
        arms.abort(settings, req.name, wait=600)
        action, production = "aborted", champion
    else:
        action, production = "continued", champion
    return LiveDecision(
        action=action,
        production_version=production,
        reason=said,
        gate_rmse_champion=c.champion_rmse,
        gate_rmse_challenger=c.challenger_rmse,
        ab_run_id=report.run_id,
    )
