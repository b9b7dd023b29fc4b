"""The one promotion rule, on numbers and slice tables made here (no model, no server)."""

from __future__ import annotations

import pandas as pd
import pytest

from duration.core.gate import GateRule, gate


def slices(*rows: tuple[str, int, float]) -> pd.DataFrame:
    """A side-by-side slice table: (slice, rides, the challenger's RMSE change)."""
    return pd.DataFrame(
        [
            {
                "slice_by": "pickup_borough",
                "slice": name,
                "rides": n,
                "rmse_champion": 5.0,
                "rmse_challenger": 5.0 * (1 + change),
                "change": change,
            }
            for name, n, change in rows
        ]
    )


def decide(ch: float, cp: float | None, table: pd.DataFrame | None = None, **rule: float):
    return gate(
        challenger="2",
        champion=None if cp is None else "1",
        challenger_rmse=ch,
        champion_rmse=cp,
        slices=table,
        rule=GateRule(**rule),
    )


def test_the_first_version_is_promoted_whatever_it_scores():
    v = decide(99.0, None)
    assert v.promoted and v.reason == "v2 is the first Production version"


@pytest.mark.parametrize(
    "ch, cp, margin, promoted",
    [
        (5.0, 5.5, 0.0, True),  # lower: promoted
        (5.5, 5.5, 0.0, False),  # a tie is not an improvement
        (5.6, 5.5, 0.0, False),  # worse
        (5.0, 5.5, 0.5, False),  # exactly the margin: not more than it
        (5.0, 5.5, 0.49, True),
        (5.0, 5.5, 1000.0, False),
    ],
)
def test_the_challenger_must_win_by_more_than_the_margin(ch, cp, margin, promoted):
    v = decide(ch, cp, min_improvement=margin)
    assert v.promoted is promoted
    if not promoted:
        assert f"challenger v2 RMSE {ch:.4f} does not beat champion v1 {cp:.4f}" in v.reason
        assert f"by more than {margin}; v1 stays in Production" in v.reason


def test_a_sizeable_slice_much_worse_vetoes_a_better_overall_rmse():
    table = slices(("Manhattan", 40_000, -0.05), ("Bronx", 2_000, 0.25), ("EWR", 50, 3.0))
    v = decide(5.0, 5.5, table)
    assert not v.promoted
    assert "on pickup_borough Bronx it is 25% worse (more than 10%)" in v.reason  # not EWR
    looser = decide(5.0, 5.5, table, max_slice_loss=0.3)
    assert looser.promoted and "no slice of 500 rides or more is over 30% worse" in looser.reason


def test_small_slices_and_slight_losses_do_not_veto():
    table = slices(("Manhattan", 40_000, 0.1), ("Staten Island", 499, 5.0))
    assert decide(5.0, 5.5, table).promoted  # 10% is not more than 10%; 499 rides is noise
    assert not decide(5.0, 5.5, table, min_slice_rides=499).promoted


def test_the_worst_of_several_vetoing_slices_is_named():
    table = slices(("Queens", 5_000, 0.2), ("Bronx", 5_000, 0.6), ("Brooklyn", 5_000, 0.3))
    assert "Bronx it is 60% worse" in decide(5.0, 5.5, table).reason


def test_no_slice_table_means_only_the_overall_rmse_decides():
    assert decide(5.0, 5.5, None).promoted
    assert decide(5.0, 5.5, slices()).promoted
