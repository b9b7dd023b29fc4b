"""The serving rules, and one thing the tests hold: a ride the served model refuses is a
ride `prepare` drops, and a ride it takes is one `prepare` keeps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from duration.core import rules
from duration.core.records import canonical, normalise
from duration.data.prepare import keep_served
from duration.serving.parse import plain

NOW = np.datetime64("2026-12-04T12:00:00", "us")
GOOD = {
    "lpep_pickup_datetime": "2021-04-01T08:00:00",
    "PULocationID": 74,
    "DOLocationID": 75,
    "trip_distance": 1.2,
    "VendorID": 2.0,
    "passenger_count": None,
}
KINDS = {
    "lpep_pickup_datetime": "datetime",
    "PULocationID": "long",
    "DOLocationID": "long",
    "trip_distance": "double",
    "VendorID": "any",
    "passenger_count": "any",
}
# (a change to the good ride, the canonical column it breaks or None)
CASES = [
    ({}, None),
    ({"trip_distance": 0.0}, None),
    ({"trip_distance": 100.0}, None),
    ({"PULocationID": 264, "DOLocationID": 265}, None),
    ({"passenger_count": 9.0}, None),
    ({"lpep_pickup_datetime": "2009-01-01T00:00:00"}, None),
    ({"trip_distance": -0.5}, "trip_distance"),
    ({"trip_distance": 100.01}, "trip_distance"),
    ({"trip_distance": 244152.0}, "trip_distance"),
    ({"PULocationID": 0}, "PULocationID"),
    ({"DOLocationID": 266}, "DOLocationID"),
    ({"DOLocationID": 99999}, "DOLocationID"),
    ({"lpep_pickup_datetime": "2008-12-31T23:59:00"}, "pickup_datetime"),
    ({"lpep_pickup_datetime": "2026-12-06T00:00:00"}, "pickup_datetime"),
    ({"trip_distance": float("inf")}, "trip_distance"),
    ({"VendorID": float("inf")}, "VendorID"),
]


def served(ride: dict) -> rules.Broken | None:
    """What the scoring front decides, as it decides it (plain arrays, canonical)."""
    arrays = {c: plain(KINDS[c], [v]) for c, v in ride.items()}
    canon = canonical(arrays, 1) if all(a is not None for a in arrays.values()) else None
    if canon is None:
        canon = {c: s.to_numpy() for c, s in normalise(pd.DataFrame([ride])).items()}
    return rules.first_broken(canon, NOW)


def batch(ride: dict) -> bool:
    """What `prepare` decides: whether the ride is kept."""
    frame = normalise(pd.DataFrame([ride]))
    return len(keep_served(frame, NOW)) == 1


@pytest.mark.parametrize(("change", "breaks"), CASES)
def test_the_served_path_and_prepare_agree_on_every_ride(change, breaks):
    ride = {**GOOD, **change}
    found = served(ride)
    assert (found.column if found else None) == breaks
    assert batch(ride) == (breaks is None)


def test_the_refusal_names_the_ride_the_field_and_what_is_allowed():
    rides = {
        "trip_distance": np.array([1.0, 2.0, -3.0]),
        "PULocationID": np.array([1, 2, 3]),
        "DOLocationID": np.array([1, 300, 3]),
    }
    found = rules.first_broken(rides, NOW)
    assert found is not None and (found.column, found.index, found.value) == (
        "DOLocationID",
        1,
        300,
    )
    assert found.message() == (
        "ride 1: DOLocationID is 300, which is not allowed: give a TLC zone, 1 to 265 (one bad "
        "ride refuses its request)"
    )
    assert rules.valid(rides, 3, NOW).tolist() == [True, False, False]


def test_a_json_nan_or_infinity_is_found_but_null_is_missing():
    columns = {"trip_distance": [1.0, None, 2.0], "VendorID": [1.0, 2.0, float("nan")]}
    assert rules.first_non_finite(columns) == (
        "VendorID",
        2,
        pytest.approx(float("nan"), nan_ok=True),
    )
    assert rules.first_non_finite({"trip_distance": [None, 1.0]}) is None
