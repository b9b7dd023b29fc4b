"""The vocabulary's rules: months and training spans."""

from __future__ import annotations

import pytest

from duration.core.schema import (
    check_month,
    last_month,
    month_range,
    months_between,
    previous_month,
    span_months,
)
from duration.errors import DurationError


def test_months():
    assert month_range("2021-11", "2022-02") == ["2021-11", "2021-12", "2022-01", "2022-02"]
    assert month_range("2022-02", "2021-11") == []
    assert months_between("2021-01", "2022-03") == 14
    assert previous_month("2022-01") == "2021-12" and previous_month("2021-05") == "2021-04"


@pytest.mark.parametrize("bad", ["2021-13", "21-01", "2021-1", "", "2021-00"])
def test_a_month_that_is_not_yyyy_mm_is_one_line_naming_its_flag(bad):
    with pytest.raises(DurationError, match=f"--train {bad!r} is not a month: use YYYY-MM"):
        check_month(bad, "--train")


def test_a_span_is_its_months_oldest_first():
    assert span_months("2021-02+2021-03", "--train") == ["2021-02", "2021-03"]
    assert last_month("2021-02+2021-03") == "2021-03" and last_month("2021-01") == "2021-01"
    with pytest.raises(DurationError, match="--train '2021-3'"):
        span_months("2021-02+2021-3", "--train")
