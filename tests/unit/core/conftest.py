"""Small rides and a fitted featurizer for the core tests (no data files, no server)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from duration.core import featurize

ZONES = {1: "EWR", 2: "Queens", 3: "Bronx", 4: "Manhattan"}
SERVICE = {1: "EWR", 2: "Boro Zone", 3: "Boro Zone", 4: "Yellow Zone"}


def canonical() -> pd.DataFrame:
    """Three canonical rides: two zones in the table, one not; a missing rate code."""
    return pd.DataFrame(
        {
            "pickup_datetime": pd.to_datetime(
                ["2021-01-04 08:30", "2021-01-09 23:15", "2021-01-10 00:00"]
            ),
            "dropoff_datetime": pd.to_datetime(
                ["2021-01-04 08:50", "2021-01-09 23:30", "2021-01-10 00:10"]
            ),
            "PULocationID": [1, 2, 99],
            "DOLocationID": [4, 4, 3],
            "trip_distance": [1.5, 0.0, 3.2],
            "RatecodeID": [1.0, np.nan, 2.0],
            "duration": [20.0, 15.0, 10.0],
            "fare_amount": [10.0, 8.0, 20.0],
            "tip_amount": [1.0, 0.0, 2.0],
        }
    )


def fitted(fs, rides):
    return featurize.Featurizer(feature_set=fs, boroughs=ZONES, service_zones=SERVICE).fit(rides)


@pytest.fixture
def rides() -> pd.DataFrame:
    return canonical()
