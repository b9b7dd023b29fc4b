"""A month's decision by the cycle, as it is recorded: one decision run per (model, month)
in the cycle's experiment, with the decision itself as its `decision` tag (JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from duration.tracking.client import client
from duration.tracking.names import CYCLE_EXPERIMENT


@dataclass(kw_only=True)
class CycleResult:
    """What the cycle decided for one month (the `--summary` JSON)."""

    month: str
    verdict: str
    action: str  # kept, promoted, rejected, awaiting-approval; live: shadow, canary, then
    # aborted, continued
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


def recorded(name: str, month: str, digest: str | None = None) -> CycleResult | None:
    """The decision already taken for (model, month) (for the month's data `digest`, when
    given), if a cycle finished it before; as it was recorded, marked `repeated`."""
    exp = client().get_experiment_by_name(CYCLE_EXPERIMENT)
    if exp is None:
        return None
    found = client().search_runs(
        [exp.experiment_id],
        f"tags.model_name = '{name}' and tags.month = '{month}' and attributes.status = 'FINISHED'"
        + (f" and tags.data_digest = '{digest}'" if digest else ""),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        return None
    return CycleResult(**{**json.loads(found[0].data.tags["decision"]), "repeated": True})
