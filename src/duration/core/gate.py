"""The one rule that decides a promotion, used by `duration promote` and the monthly cycle:
a challenger replaces the champion only if its RMSE is lower by more than a margin and no
sizeable slice of the same rides (pickup borough, hour band, distance band) gets much worse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, kw_only=True)
class GateRule:
    """What a challenger must do to replace the champion."""

    min_improvement: float = 0.0  # RMSE (minutes) it must win by, strictly
    max_slice_loss: float = 0.1  # no slice's RMSE may grow by more than this share
    min_slice_rides: int = 500  # slices smaller than this are too noisy to veto


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The gate's decision and its reason, in words."""

    promoted: bool
    reason: str


def gate(
    *,
    challenger: str,
    champion: str | None,
    challenger_rmse: float,
    champion_rmse: float | None,
    slices: pd.DataFrame | None,
    rule: GateRule,
) -> Verdict:
    """Promote version `challenger` over `champion` (None: there is none yet) only if its
    RMSE is lower by more than `rule.min_improvement` and no slice of at least
    `rule.min_slice_rides` rides is worse by more than `rule.max_slice_loss`
    (`slices`: `compare_slices` of the two on the same rides)."""
    if champion is None or champion_rmse is None:
        return Verdict(promoted=True, reason=f"v{challenger} is the first Production version")
    ch, cp, m = f"v{challenger}", f"v{champion}", rule.min_improvement
    scored = f"challenger {ch} RMSE {challenger_rmse:.4f}"
    if not champion_rmse - challenger_rmse > m:
        return Verdict(
            promoted=False,
            reason=f"{scored} does not beat champion {cp} {champion_rmse:.4f} by more than "
            f"{m}; {cp} stays in Production",
        )
    beats = f"{scored} beats champion {cp} {champion_rmse:.4f} by more than {m}"
    worse = worst_slice(slices, rule)
    if worse is not None:
        return Verdict(
            promoted=False,
            reason=f"{beats}, but on {worse['slice_by']} {worse['slice']} it is "
            f"{worse['change']:.0%} worse (more than {rule.max_slice_loss:.0%}); {cp} stays "
            "in Production",
        )
    return Verdict(
        promoted=True,
        reason=f"{beats}, and no slice of {rule.min_slice_rides} rides or more is over "
        f"{rule.max_slice_loss:.0%} worse",
    )


def worst_slice(slices: pd.DataFrame | None, rule: GateRule) -> pd.Series | None:
    """The sizeable slice the challenger makes worse by the most beyond the rule, if any."""
    if slices is None or slices.empty:
        return None
    big = slices[slices["rides"] >= rule.min_slice_rides]
    worse = big[big["change"] > rule.max_slice_loss]
    return None if worse.empty else worse.sort_values("change").iloc[-1]
