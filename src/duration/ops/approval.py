"""Manual approval (DURATION_AUTOMATE_APPROVE=manual): a promotion or a finish that the
cycle decided waits, recorded as `awaiting-approval`, until a person runs
`duration automate approve MONTH`. Approving makes the move the cycle would have made (the
aliases; serving follows) and records who approved it on the month's decision run."""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict, replace
from datetime import UTC, datetime

from duration.errors import DurationError
from duration.ops import cycle_live
from duration.ops.decision import CycleResult, recorded
from duration.ops.specs import AWAITING_APPROVAL
from duration.registry.uris import version_in
from duration.settings import Settings
from duration.tracking.client import client


def approve(settings: Settings, name: str, month: str) -> CycleResult:
    """Make the move that `month`'s decision waits for; the decision as it now stands."""
    r = recorded(name, month)
    if r is None:
        raise DurationError(f"{name} has no decision for {month} yet: nothing to approve")
    if r.action != AWAITING_APPROVAL or r.challenger_version is None:
        raise DurationError(
            f"{name}'s decision for {month} is {r.action!r}: nothing waits for approval"
        )
    current = version_in(name, "Production")
    if current is None or current.version != r.champion_version:
        now = current.version if current is not None else "none"
        raise DurationError(
            f"Production of {name} is v{now}, not v{r.champion_version} as when {month} was "
            "decided: the decision is stale, and is not applied"
        )
    version = r.challenger_version
    cycle_live.promote(settings, name, version)  # a live arm's alias goes too: it finishes
    who, at = getpass.getuser(), datetime.now(UTC).isoformat(timespec="seconds")
    done = replace(
        r,
        action="promoted",
        production_version=version,
        reason=f"{r.reason}; approved by {who} at {at}",
        repeated=False,
    )
    c = client()
    for key, value in {
        "action": done.action,
        "production_version": version,
        "approved_by": who,
        "approved_at": at,
        "decision": json.dumps(asdict(done)),
    }.items():
        c.set_tag(r.decision_run_id, key, value)
    return done
