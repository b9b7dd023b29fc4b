"""A version's reference profile: a sample of its training month's model inputs with their
predictions, and facts from the whole month (zones seen, value ranges). The registry stores
it with the version's run (`registry.profile`), so monitoring never needs the training files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

ROWS = 50_000
SEED = 42
# The model's inputs as monitoring sees them: raw ride fields (and the pickup time's parts).
NUMERIC = ["trip_distance", "pickup_hour"]
CATEGORICAL = [
    "PULocationID",
    "DOLocationID",
    "pickup_weekday",
    "VendorID",
    "RatecodeID",
    "trip_type",
    "passenger_count",
]
CODES = ["VendorID", "RatecodeID", "trip_type", "passenger_count"]
RAW = ["PULocationID", "DOLocationID", "trip_distance", *CODES]
RANGE_QUANTILES = (0.001, 0.999)


@dataclass(frozen=True, kw_only=True)
class Profile:
    """The sample (inputs, `prediction`, `duration`) and the whole month's facts."""

    frame: pd.DataFrame
    meta: dict


def inputs(rides: pd.DataFrame) -> pd.DataFrame:
    """Prepared rides -> the monitored input columns (missing values stay missing)."""
    out = pd.DataFrame(index=rides.index)
    for col in RAW:
        out[col] = rides.get(col, np.nan)
    t = pd.to_datetime(rides["pickup_datetime"])
    out["pickup_hour"] = t.dt.hour.astype("float64")
    out["pickup_weekday"] = t.dt.day_of_week.astype("float64")
    return out[NUMERIC + CATEGORICAL]


def sample(rides: pd.DataFrame, n: int = ROWS, seed: int = SEED) -> pd.DataFrame:
    """At most `n` rides, drawn without replacement with a fixed seed."""
    if len(rides) <= n:
        return rides
    return rides.sample(n=n, random_state=seed).sort_index()


def build(
    rides: pd.DataFrame, sampled: pd.DataFrame, predictions: np.ndarray, about: dict
) -> Profile:
    """The profile of a training month: `sampled` rides (with their `predictions`) plus the
    zones and value ranges of all its `rides`; `about` (month, color, version) is kept."""
    frame = inputs(sampled).reset_index(drop=True)
    frame["prediction"] = np.asarray(predictions, dtype="float64")
    frame["duration"] = sampled["duration"].to_numpy()
    whole = inputs(rides)
    meta = {
        **about,
        "rows": len(rides),
        "sample_rows": len(frame),
        "zones": [int(z) for z in sorted(set(rides["PULocationID"]) | set(rides["DOLocationID"]))],
        "ranges": {c: [float(whole[c].quantile(q)) for q in RANGE_QUANTILES] for c in NUMERIC},
        "missing_share": float(whole.isna().to_numpy().mean()),
    }
    return Profile(frame=frame, meta=meta)
