"""The live-traffic decision: does a candidate arm (canary or shadow) beat Production on the
rides' real durations?

Each arm's RMSE has a bootstrap 95% confidence interval. The decision rests on the
difference, candidate RMSE minus Production RMSE, and its bootstrap 95% interval: over
independent resamples of each arm's rides for a canary (the arms served different
clients), over paired resamples of the same rides for a shadow (both scored every one);
a shadow also gets scipy's Wilcoxon signed-rank test of the paired squared errors.

- `promote`: the candidate's RMSE is lower, the interval lies wholly below 0, and no slice
  of at least `rule.min_slice_rides` rides is worse by more than `rule.max_slice_loss`;
- `abort`: the interval lies wholly above 0 (worse, with the same confidence);
- `continue`: anything else (too few rides yet to tell, or a slice vetoes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from duration.core.gate import GateRule, worst_slice

if TYPE_CHECKING:
    import pandas as pd

CONFIDENCE = 0.95
RESAMPLES = 2_000
MIN_RIDES = 200  # labelled rides an arm needs before a report means anything
SEED = 0


@dataclass(frozen=True, kw_only=True)
class Interval:
    value: float
    low: float
    high: float


@dataclass(frozen=True, kw_only=True)
class Decision:
    decision: str  # promote, abort, continue
    reason: str
    difference: Interval  # candidate RMSE - Production RMSE, minutes
    paired: bool
    wilcoxon_p: float | None = None


def _rmse(*se: Any, axis: int = -1) -> Any:
    return np.sqrt(np.mean(se[0], axis=axis))


def _diff(cand: Any, prod: Any, axis: int = -1) -> Any:
    return np.sqrt(np.mean(cand, axis=axis)) - np.sqrt(np.mean(prod, axis=axis))


def _bootstrap(data: tuple, statistic: Any, paired: bool) -> tuple[float, float]:
    from scipy.stats import bootstrap  # deferred: scipy.stats takes a second to import

    r = bootstrap(
        data,
        statistic,
        paired=paired,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        batch=200,
        rng=np.random.default_rng(SEED),
    )
    return float(r.confidence_interval.low), float(r.confidence_interval.high)


def rmse_interval(se: np.ndarray) -> Interval:
    """An arm's RMSE (from its squared errors) and its bootstrap 95% interval."""
    low, high = _bootstrap((se,), _rmse, paired=False)
    return Interval(value=float(np.sqrt(se.mean())), low=low, high=high)


def decide(
    prod_se: np.ndarray,
    cand_se: np.ndarray,
    *,
    paired: bool,
    slices: pd.DataFrame | None,
    rule: GateRule,
) -> Decision:
    """The decision rule above, on the two arms' squared errors (`paired`: the same rides,
    in the same order) and the slice comparison (`core.metrics.compare_slices`)."""
    low, high = _bootstrap((cand_se, prod_se), _diff, paired=paired)
    d = Interval(value=float(_diff(cand_se, prod_se)), low=low, high=high)
    p = None
    if paired:
        from scipy.stats import wilcoxon  # deferred: scipy.stats takes a second to import

        p = float(wilcoxon(cand_se, prod_se).pvalue) if np.any(cand_se != prod_se) else 1.0
    ci = f"RMSE difference {d.value:+.4f} min, 95% CI [{d.low:+.4f}, {d.high:+.4f}]"
    if d.value < 0 and d.high < 0:
        worse = worst_slice(slices, rule)
        if worse is None:
            return Decision(
                decision="promote",
                reason=f"the candidate is better: {ci}",
                difference=d,
                paired=paired,
                wilcoxon_p=p,
            )
        why = (
            f"the candidate is better overall ({ci}), but on {worse['slice_by']} "
            f"{worse['slice']} it is {worse['change']:.0%} worse (more than "
            f"{rule.max_slice_loss:.0%})"
        )
        return Decision(decision="continue", reason=why, difference=d, paired=paired, wilcoxon_p=p)
    if d.low > 0:
        return Decision(
            decision="abort",
            reason=f"the candidate is worse: {ci}",
            difference=d,
            paired=paired,
            wilcoxon_p=p,
        )
    return Decision(
        decision="continue",
        reason=f"not yet decided ({ci} holds 0): more rides",
        difference=d,
        paired=paired,
        wilcoxon_p=p,
    )
