"""Requests are checked before anything loads or is sent: traffic, the cycle's live mode, a
canary's weight."""

from __future__ import annotations

import pytest

from duration.errors import DurationError
from duration.ops.specs import TrafficRequest


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"rides": 0}, "--rides 0: give at least 1"),
        ({"rate": 0}, "--rate 0"),
        ({"concurrency": 65}, "--concurrency 65: give 1-64"),
        ({"batch": 5001}, "--batch 5001: give 1-5000"),
        ({"month": "2021-13"}, "2021-13"),
    ],
)
def test_a_bad_request_is_one_line(given, says):
    req = TrafficRequest(**{"month": "2021-04", **given})
    with pytest.raises(DurationError, match=says):
        req.check(max_rides=5000)


def test_a_good_request_passes():
    TrafficRequest(month="2021-04", rides=20_000, rate=500, concurrency=8).check(5000)


@pytest.mark.parametrize(
    ("live", "weight", "says"),
    [
        ("sometimes", 20, "--live 'sometimes'"),
        ("canary", 0, "--live-weight 0"),
        ("canary", 100, "--live-weight 100"),
    ],
)
def test_a_bad_live_mode_is_one_line(live, weight, says):
    from duration.ops.specs import CycleRequest

    with pytest.raises(DurationError, match=says):
        CycleRequest(month="2021-04", live=live, live_weight=weight).check()


@pytest.mark.parametrize("weight", [0, 100, -5])
def test_a_canary_weight_outside_1_to_99_is_one_line(weight):
    from duration.ops.specs import check_weight

    with pytest.raises(DurationError, match=f"--weight {weight}: give .* 1-99"):
        check_weight(weight)
