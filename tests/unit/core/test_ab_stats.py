"""The live decision rule on constructed arms: much better, much worse, the same."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from duration.core import ab_stats as ab
from duration.core.gate import GateRule

RNG = np.random.default_rng(7)
Y = RNG.gamma(3.0, 5.0, 4000)
BASE = Y + RNG.normal(0, 5.0, Y.size)  # Production: about 5 min RMSE


def se(pred: np.ndarray) -> np.ndarray:
    return (pred - Y) ** 2


CASES = {
    "promote": Y + RNG.normal(0, 3.0, Y.size),  # much better
    "abort": Y + RNG.normal(0, 7.0, Y.size),  # much worse
    "continue": BASE + RNG.normal(0, 0.01, Y.size),  # the same, to a hair
}


@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize("expected", sorted(CASES))
def test_constructed_arms_get_their_decision(expected, paired):
    cand = se(CASES[expected])
    prod = se(BASE)
    if not paired:  # a canary: the arms served different rides
        prod, cand = prod[: Y.size // 2], cand[Y.size // 2 :]
    d = ab.decide(prod, cand, paired=paired, slices=None, rule=GateRule())
    assert d.decision == expected, d.reason
    assert d.difference.low <= d.difference.value <= d.difference.high
    assert (d.wilcoxon_p is not None) == paired
    if expected == "promote":
        assert d.difference.high < 0 and "better" in d.reason
    if expected == "abort":
        assert d.difference.low > 0 and "worse" in d.reason


def test_a_slice_much_worse_holds_a_better_candidate_back():
    queens = {
        "slice_by": "pickup_borough",
        "slice": "Queens",
        "rides": 900,
        "rmse_champion": 4.0,
        "rmse_challenger": 5.0,
        "change": 0.25,
    }
    slices = pd.DataFrame([queens])
    d = ab.decide(se(BASE), se(CASES["promote"]), paired=True, slices=slices, rule=GateRule())
    assert d.decision == "continue" and "Queens" in d.reason and "25% worse" in d.reason
    small = slices.assign(rides=100)  # too few rides to veto
    d = ab.decide(se(BASE), se(CASES["promote"]), paired=True, slices=small, rule=GateRule())
    assert d.decision == "promote"


def test_an_arms_interval_holds_its_rmse():
    i = ab.rmse_interval(se(BASE))
    assert i.low < i.value < i.high and i.value == pytest.approx(np.sqrt(se(BASE).mean()))
    assert i.low > 4.7 and i.high < 5.3
