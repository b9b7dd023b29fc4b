"""`duration traffic`'s request is checked before anything loads or is sent."""

from __future__ import annotations

import pytest

from duration.errors import DurationError
from duration.ops.requests import TrafficRequest


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
