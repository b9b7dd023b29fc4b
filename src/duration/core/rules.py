"""The rules a ride must meet to be served or trained on, in one place: the scoring front
refuses a request with a ride that breaks one (HTTP 400), and `prepare` drops such rides
from a month, so that what is served and what is learnt from agree.

- A number is finite: JSON's `NaN` and `Infinity` are refused (`null` is a missing value,
  which the model knows how to read, and so is a missing code in a TLC file).
- `trip_distance` is 0 to MAX_DISTANCE miles. A ride of at most 60 minutes (the course's
  rule) would have to average over 100 mph to go farther. In the mirror's 20 green months
  (1,336,633 rides of 1 to 60 minutes), 1,100 are longer, 1,075 of them over 1,000 miles
  (up to 293,931), while 613 are 30 to 40 miles and 14 are 50 to 60.
- A zone is one of the TLC's zone table, 1 to 265 (264 and 265 are its own "unknown").
- The pickup is from FIRST_PICKUP (the first TLC trip records) to a day after now: TLC
  files carry a few pickups in 2008 and 2009 that no ride of their month has.

Pure: numpy only. The columns are canonical (`duration.core.records.canonical`), a missing
value NaN (NaT for a time).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MAX_DISTANCE = 100.0  # miles
ZONES = (1, 265)
FIRST_PICKUP = np.datetime64("2009-01-01T00:00:00", "us")
AHEAD = np.timedelta64(1, "D")  # a pickup may be this far after now (clocks, time zones)
ZONE_COLUMNS = ("PULocationID", "DOLocationID")
CODE_COLUMNS = ("VendorID", "RatecodeID", "trip_type", "passenger_count")


@dataclass(frozen=True, kw_only=True)
class Broken:
    """The first ride of a request that breaks a rule."""

    column: str  # canonical name
    index: int  # the ride's place in its request
    value: object
    allowed: str

    def message(self, name: str | None = None) -> str:
        """One line: which ride, which field (as the client named it), and what is allowed."""
        return (
            f"ride {self.index}: {name or self.column} is {self.value!r}, which is not "
            f"allowed: give {self.allowed} (one bad ride refuses its request)"
        )


def allowed(column: str) -> str:
    """What `column` may hold, in words."""
    if column == "trip_distance":
        return f"a distance of 0 to {MAX_DISTANCE:g} miles"
    if column in ZONE_COLUMNS:
        return f"a TLC zone, {ZONES[0]} to {ZONES[1]}"
    if column == "pickup_datetime":
        return f"a time from {str(FIRST_PICKUP)[:10]} to a day from now"
    return "a finite number, or null"


def _window(now: np.datetime64) -> tuple[np.datetime64, np.datetime64]:
    return FIRST_PICKUP, now.astype("datetime64[us]") + AHEAD


def broken(rides: Mapping[str, np.ndarray], now: np.datetime64) -> dict[str, np.ndarray]:
    """Per canonical column the rides hold, which rides break its rule."""
    out = {}
    if (d := rides.get("trip_distance")) is not None:
        d = np.asarray(d, dtype=np.float64)
        out["trip_distance"] = ~np.isnan(d) & ~((d >= 0) & (d <= MAX_DISTANCE))
    for column in ZONE_COLUMNS:
        if (z := rides.get(column)) is not None:
            z = np.asarray(z, dtype=np.float64)
            out[column] = ~((z >= ZONES[0]) & (z <= ZONES[1]))
    if (t := rides.get("pickup_datetime")) is not None:
        t = np.asarray(t, dtype="datetime64[us]")
        lo, hi = _window(now)
        out["pickup_datetime"] = np.isnat(t) | (t < lo) | (t > hi)
    for column in CODE_COLUMNS:
        if (c := rides.get(column)) is not None:
            out[column] = np.isinf(np.asarray(c, dtype=np.float64))
    return out


def valid(rides: Mapping[str, np.ndarray], n: int, now: np.datetime64) -> np.ndarray:
    """Which of `n` rides meet every rule."""
    ok = np.ones(n, dtype=bool)
    for mask in broken(rides, now).values():
        ok &= ~mask
    return ok


def first_broken(rides: Mapping[str, np.ndarray], now: np.datetime64) -> Broken | None:
    """The first ride that breaks a rule, by its place in the request (None: all meet them)."""
    found: Broken | None = None
    for column, mask in broken(rides, now).items():
        hits = np.flatnonzero(mask)
        if len(hits) and (found is None or hits[0] < found.index):
            value = rides[column][hits[0]]
            shown = str(value)[:26] if column == "pickup_datetime" else _plain(value)
            found = Broken(column=column, index=int(hits[0]), value=shown, allowed=allowed(column))
    return found


def _plain(value: object) -> object:
    """A numpy scalar as the Python number a client sent."""
    return value.item() if isinstance(value, np.generic) else value


def first_non_finite(columns: Mapping[str, Sequence[object]]) -> tuple[str, int, float] | None:
    """The first JSON `NaN` or `Infinity` among raw values: (name, ride index, value)."""
    found: tuple[str, int, float] | None = None
    for name, values in columns.items():
        for i, v in enumerate(values):
            if type(v) is float and not math.isfinite(v):
                if found is None or i < found[1]:
                    found = (name, i, v)
                break
    return found
