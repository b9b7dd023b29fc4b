"""The project's vocabulary: record types, feature sets, model kinds, months and the
course's 1-60 minute rule. Light (no numpy or pandas): the CLI checks its flags with it
before any heavy library loads; the logged model carries it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from duration.errors import DurationError


class Color(StrEnum):
    """TLC trip record types."""

    green = "green"
    yellow = "yellow"
    fhv = "fhv"


class FeatureSet(StrEnum):
    """Named feature sets (see duration.core.featurize)."""

    course = "course"
    default = "default"


class ModelKind(StrEnum):
    """Estimators that `duration train` can fit."""

    linear = "linear"
    lasso = "lasso"
    ridge = "ridge"
    random_forest = "random_forest"
    xgboost = "xgboost"


# ------------------------------------------------------------------------------ months

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True, kw_only=True)
class Months:
    """The months of a training job: fit on `train`, stop early on `val`, test on `test`."""

    train: str = "2021-01"
    val: str = "2021-02"
    test: str = "2021-03"


COURSE = Months()  # the course's months: every command's default
NEXT_MONTH = "2021-04"  # the first month after them: what predict and monitor score first


def check_month(month: str, flag: str = "--month") -> str:
    """Return `month` if it is YYYY-MM, else raise a one-line error naming the flag."""
    if not _MONTH.match(month or ""):
        raise DurationError(f"{flag} {month!r} is not a month: use YYYY-MM, for example 2021-01")
    return month


def span_months(train: str, flag: str | None = None) -> list[str]:
    """The months of a training span: one month, or several joined by "+" (oldest first).
    With `flag`, each must be YYYY-MM, else a one-line error naming the flag."""
    months = train.split("+")
    if flag is not None:
        for month in months:
            check_month(month, flag)
    return months


def last_month(train: str) -> str:
    """The newest month of a training span."""
    return span_months(train)[-1]


def months_between(start: str, end: str) -> int:
    """Whole months from `start` to `end` (YYYY-MM), negative when `end` comes first."""
    (y0, m0), (y1, m1) = (map(int, start.split("-")), map(int, end.split("-")))
    return (y1 - y0) * 12 + (m1 - m0)


def month_range(start: str, end: str) -> list[str]:
    """Every YYYY-MM from `start` to `end`, inclusive (empty when `start` comes after)."""
    y, m = map(int, start.split("-"))
    out = []
    while f"{y:04d}-{m:02d}" <= end:
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def previous_month(month: str) -> str:
    """The month before `month`."""
    y, m = map(int, month.split("-"))
    return f"{y - 1:04d}-12" if m == 1 else f"{y:04d}-{m - 1:02d}"


def next_month(month: str) -> str:
    """The month after `month`."""
    y, m = map(int, month.split("-"))
    return f"{y + 1:04d}-01" if m == 12 else f"{y:04d}-{m + 1:02d}"


# ------------------------------------------------------------------------------- rides

MIN_DURATION, MAX_DURATION = 1.0, 60.0  # minutes: the course's rule for a real ride
UNKNOWN_ZONE = 264  # the TLC's own LocationID for an unknown zone
IDENTITY = ["pickup_datetime", "PULocationID", "DOLocationID", "trip_distance"]
