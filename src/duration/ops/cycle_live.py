"""The cycle's live mode: a challenger that passed the offline gate is put beside
Production as a shadow or a canary instead of being promoted; the next month's cycle then
decides on the live evidence (`ab report`) and the offline gate together. Every change is
an alias move (`canary`, `shadow`, `production`), and serving follows it.

- promote: both say so (the candidate finishes: registry and traffic); with manual approval
  (DURATION_AUTOMATE_APPROVE=manual) it waits for `duration automate approve MONTH`;
- abort: the A/B report says abort, or the gate rejects it on the new month;
- continue: the report cannot tell yet, and the gate does not object (it stays live).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from duration.core.schema import Color
from duration.data import prepare
from duration.errors import DurationError
from duration.ops import ab
from duration.ops.converge import moved
from duration.ops.specs import AWAITING_APPROVAL, CycleRequest
from duration.registry import aliases
from duration.registry.aliases import Wanted
from duration.registry.lease import promote_lock
from duration.registry.promote import compare
from duration.registry.uris import set_production
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
    """Make the challenger the `canary` or `shadow` alias, as the live mode says, and wait
    for serving to follow; what was done, in words."""
    role = req.role
    if role is None:
        raise DurationError("the cycle's live mode is off: nothing to put live")
    weight = req.live_weight if role is Role.canary else 0
    follow_move(settings, req.name, lambda: aliases.put_candidate(req.name, version, role, weight))
    share = f" for {weight}% of clients" if role is Role.canary else ""
    then = "next month's cycle decides on its rides and the gate"
    return f"v{version} serves as a {role}{share}; {then}"


def follow_move(
    settings: Settings, name: str, move: Callable[[], object], before: Wanted | None = None
) -> None:
    """Move the aliases and wait for serving to follow; when it cannot, the aliases go back
    (to `before`, default: as `move` found them) and the failed step is one line."""
    for d in moved(settings, name, move, wait=600, say=lambda _: None, before=before):
        if d.problem:
            raise DurationError(
                f"could not {d.step.said()} ({d.problem}): the aliases are back where they were"
            )


def promote(settings: Settings, name: str, version: str) -> None:
    """`version` becomes Production (stage and alias; a live candidate's alias goes), under
    the promote lock; then serving follows."""

    def move() -> None:
        with promote_lock(settings, name):
            set_production(name, version)
            aliases.clear(name)

    follow_move(settings, name, move)


def abort(settings: Settings, name: str) -> None:
    """The candidate's alias goes, and serving follows: Production alone."""
    follow_move(settings, name, lambda: aliases.clear(name))


def decide(settings: Settings, req: CycleRequest, champion: str, arm: Arm) -> LiveDecision:
    """The live candidate, judged on `req.month`'s served rides and on the gate."""
    report = ab.report(settings, req.color, req.month, req.rule)
    color = Color(req.color)
    rides = prepare.load_processed(settings, color, req.month)
    with promote_lock(settings, req.name):
        c = compare(settings, req.name, champion, arm.version, rides, color.value, req.rule)
    said = f"a/b {report.decision} ({report.reason}); gate: {c.verdict.reason}"
    if report.decision == "promote" and c.verdict.promoted and req.hold:
        action, production = AWAITING_APPROVAL, champion
        said += f"; finishing v{arm.version} waits for `duration automate approve {req.month}`"
    elif report.decision == "promote" and c.verdict.promoted:
        promote(settings, req.name, arm.version)
        action, production = "promoted", arm.version
    elif report.decision == "abort" or not c.verdict.promoted:
        abort(settings, req.name)
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
