"""Feature sets: turn canonical rides into a feature frame (categorical and numeric columns).

`course` is the course notebook's; `default` adds what is known when a ride starts and the
training month's smoothed mean durations. The featurizer's config is stored as JSON, both in
the feature stage folder and inside the logged model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from duration.core.schema import FeatureSet
from duration.core.vectorizer import Coded, Column
from duration.errors import DurationError

# Columns computed after the ride ends; no feature set may use them.
LEAKAGE = {
    "duration",
    "dropoff_datetime",
    "fare_amount",
    "tip_amount",
    "total_amount",
    "tolls_amount",
    "extra",
    "mta_tax",
    "improvement_surcharge",
    "congestion_surcharge",
    "payment_type",
}
NEEDS = {
    FeatureSet.course: ["PULocationID", "DOLocationID", "trip_distance"],
    FeatureSet.default: ["pickup_datetime", "PULocationID", "DOLocationID", "trip_distance"],
}
# Known at the start of a ride where the color records them; "unknown" where it does not.
START_CODES = ["VendorID", "RatecodeID", "trip_type", "passenger_count"]
# Mean-duration encodings fitted on the training month (the `default` set). Each mean is
# shrunk toward the month's mean by SMOOTHING pseudo-rides; training rides get out-of-fold
# values (FOLDS folds, FOLD_SEED) so no ride's features contain its own duration.
ENCODED = ["PU_DO_mean_duration", "PU_mean_duration", "DO_mean_duration"]
SMOOTHING = 5.0
FOLDS = 5
FOLD_SEED = 42
# Matrix value type per feature set. `course` is the notebook's float64 (its LinearRegression
# needs it to reproduce 7.7587). `default` feeds trees, which work in float32 anyway: storing
# float32 makes a 3M-ride month's matrix 418 MB instead of 626 MB, and xgboost and forest
# results are the same.
DTYPES = {FeatureSet.course: np.float64, FeatureSet.default: np.float32}
# Bump when the feature definitions change, so stale stage directories are rebuilt.
FEATURES_VERSION = 3


# Canonical rides: a DataFrame, or (on the served model's small-frame path) a mapping of
# column name to a numpy array, as `records.canonical` makes it.
Rides = Any


def _floats(values: Any) -> np.ndarray:
    """A numeric column as float64, missing values NaN."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(np.float64, copy=False)
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )


def _categorical(keys: np.ndarray, label: Callable[[int], str]) -> Coded:
    """Integer keys -> codes into string labels made once per distinct key (sorted)."""
    uniques, codes = np.unique(keys, return_inverse=True)
    return Coded(codes=codes.reshape(-1), labels=[label(u) for u in uniques])


def _zone_table(mapping: dict[int, str]) -> tuple[np.ndarray, list[str]]:
    """Zone ID -> label code ("Unknown" for IDs not in the table), and the sorted labels."""
    names = sorted(set(mapping.values()) | {"Unknown"})
    lut = np.full(max(mapping, default=0) + 1, names.index("Unknown"))
    for loc, label in mapping.items():
        lut[loc] = names.index(label)
    return lut, names


def _lookup(ids: np.ndarray, table: tuple[np.ndarray, list[str]]) -> Coded:
    """Zone IDs -> codes into zone-table labels ("Unknown" for IDs not in the table)."""
    lut, names = table
    inside = ids < len(lut)
    codes = np.where(inside, lut[np.where(inside, ids, 0)], names.index("Unknown"))
    return Coded(codes=codes, labels=names)


def _encoding_table(table: dict[int, float], prior: float) -> np.ndarray:
    """Key -> smoothed mean duration, `prior` for keys the training month did not have."""
    lut = np.full(max(table, default=0) + 1, prior)
    lut[np.fromiter(table, np.int64, len(table))] = list(table.values())
    return lut


def _encode(keys: np.ndarray, lut: np.ndarray, prior: float) -> np.ndarray:
    inside = keys < len(lut)
    return np.where(inside, lut[np.where(inside, keys, 0)], prior)


def _code(values: Any, n: int) -> Coded:
    """A numeric code column -> labels '1', '2', ... with 'unknown' for missing."""
    if values is None:
        return Coded(codes=np.zeros(n, dtype=np.int8), labels=["unknown"])
    v = _floats(values)
    keys = np.where(np.isnan(v), -1, np.round(v)).astype(np.int64)
    return _categorical(keys, lambda k: "unknown" if k < 0 else str(k))


def _zones(rides: Rides) -> tuple[np.ndarray, np.ndarray]:
    """Pickup and dropoff zone IDs as int64 arrays."""
    pu = np.asarray(rides["PULocationID"], dtype=np.int64)
    do = np.asarray(rides["DOLocationID"], dtype=np.int64)
    return pu, do


def _clock(pickup: Any) -> tuple[np.ndarray, np.ndarray]:
    """Pickup time of day (hours, with the minutes as a fraction) and weekday (Monday 0),
    NaN where the time is missing."""
    t = np.asarray(pickup, dtype="datetime64[us]")
    us = t.view(np.int64)
    hours = (us // 3_600_000_000) % 24 + ((us // 60_000_000) % 60) / 60
    weekday = ((us // 86_400_000_000 + 3) % 7).astype(np.float64)  # 1970-01-01: a Thursday
    missing = np.isnat(t)
    hours[missing] = np.nan
    weekday[missing] = np.nan
    return hours, weekday


def _encoding_keys(pu: np.ndarray, do: np.ndarray) -> dict[str, np.ndarray]:
    """The key of each encoded feature: zone pair, pickup zone, dropoff zone."""
    if len(pu) and min(pu.min(), do.min()) < 0:
        raise DurationError(
            f"zone IDs must not be negative (found {min(pu.min(), do.min())} in "
            "PULocationID/DOLocationID): send the TLC's LocationID values (1-265)"
        )
    return dict(zip(ENCODED, (pu * 1000 + do, pu, do), strict=True))


def _smoothed(sums: np.ndarray, counts: np.ndarray, prior: float) -> np.ndarray:
    return (sums + SMOOTHING * prior) / (counts + SMOOTHING)


@dataclass(frozen=True, kw_only=True)
class Featurizer:
    """Turns canonical rides into a feature frame: categorical columns plus numeric ones.

    `course` is the course notebook's: the zone pair as a string, plus trip_distance.
    `default` uses only what is known when the ride starts, plus trip_distance: zone IDs and
    their pair code (numeric, so trees split them cheaply; a one-hot zone pair has 13k columns
    and makes xgboost ~50x slower for no gain), the zones' boroughs and service zones, pickup
    time of day and weekday, the vendor, rate code, trip type and passenger count, and the
    training month's smoothed mean duration per zone pair, pickup zone and dropoff zone
    (`fit` learns them; `train_frame` gives the training rides out-of-fold values).
    """

    feature_set: FeatureSet = FeatureSet.default
    boroughs: dict[int, str] = field(default_factory=dict)
    service_zones: dict[int, str] = field(default_factory=dict)
    prior: float | None = None  # the training month's mean duration
    encodings: dict[str, dict[int, float]] = field(default_factory=dict)

    @property
    def needs(self) -> list[str]:
        """The canonical ride columns this feature set requires."""
        return NEEDS[FeatureSet(self.feature_set)]

    def frame(self, rides: pd.DataFrame) -> pd.DataFrame:
        """Feature columns for each ride: Categorical (string labels) or float."""
        cols = self.columns(rides)
        return pd.DataFrame(
            {k: c.categorical() if isinstance(c, Coded) else c for k, c in cols.items()},
            index=rides.index,
        )

    def columns(self, rides: Rides) -> dict[str, Column]:
        """The feature columns, in the frame's order: codes into labels, or numbers. The one
        place the features are computed, for a frame and for the served model's rides."""
        missing = [c for c in self.needs if c not in rides]
        if missing:
            raise DurationError(
                f"the {self.feature_set} features need columns {missing}, which the input lacks"
            )
        distance = _floats(rides["trip_distance"])
        if len(distance) and np.isnan(distance).all():
            raise DurationError(
                f"the {self.feature_set} features need trip_distance, which these rides lack "
                "(fhv files have none): use green or yellow"
            )
        pu, do = _zones(rides)
        if FeatureSet(self.feature_set) is FeatureSet.course:
            pair = _categorical(pu * 10_000 + do, lambda k: f"{k // 10_000}_{k % 10_000}")
            return {"PU_DO": pair, "trip_distance": distance}
        if self.prior is None:
            raise DurationError(
                "the default features need mean-duration encodings fitted on a training month: "
                "call Featurizer.fit, or run `duration vectorize` to make them"
            )
        boroughs, service = self._tables["boroughs"], self._tables["service_zones"]
        cols: dict[str, Column] = {
            "PU_borough": _lookup(pu, boroughs),
            "DO_borough": _lookup(do, boroughs),
            "PU_service_zone": _lookup(pu, service),
            "DO_service_zone": _lookup(do, service),
        }
        for name in START_CODES:
            cols[name] = _code(rides.get(name), len(pu))
        cols["PULocationID"] = pu.astype(np.float64)
        cols["DOLocationID"] = do.astype(np.float64)
        cols["PU_DO"] = (pu * 1000 + do).astype(np.float64)
        cols["pickup_hour"], cols["pickup_weekday"] = _clock(rides["pickup_datetime"])
        cols["trip_distance"] = distance
        for name, keys in _encoding_keys(pu, do).items():
            cols[name] = _encode(keys, self._tables[name], self.prior)
        return cols

    @cached_property
    def _tables(self) -> dict[str, Any]:
        """The zone tables and encodings as lookup arrays, made once (a served worker
        featurizes a few rides at a time, thousands of times)."""
        tables: dict[str, Any] = {
            "boroughs": _zone_table(self.boroughs),
            "service_zones": _zone_table(self.service_zones),
        }
        if self.prior is not None:
            for name, table in self.encodings.items():
                tables[name] = _encoding_table(table, self.prior)
        return tables

    def fit(self, rides: pd.DataFrame) -> Featurizer:
        """This featurizer with its encodings learned from the training rides' durations."""
        if FeatureSet(self.feature_set) is FeatureSet.course:
            return self
        y = rides["duration"].to_numpy(dtype=np.float64)
        if not len(y):
            raise DurationError("cannot fit the default features on a month with no rides")
        prior = float(y.mean())
        encodings = {}
        for name, keys in _encoding_keys(*_zones(rides)).items():
            counts = np.bincount(keys)
            seen = np.flatnonzero(counts)
            means = _smoothed(np.bincount(keys, weights=y)[seen], counts[seen], prior)
            encodings[name] = dict(zip(seen.tolist(), means.tolist(), strict=True))
        return replace(self, prior=prior, encodings=encodings)

    def train_frame(self, rides: pd.DataFrame) -> pd.DataFrame:
        """`frame` for the rides the encodings were fitted on, with out-of-fold encodings.

        Each ride's encodings come only from the rides in the other folds, so a model cannot
        learn to read a ride's own duration back out of its features.
        """
        frame = self.frame(rides)
        if FeatureSet(self.feature_set) is FeatureSet.course:
            return frame
        y = rides["duration"].to_numpy(dtype=np.float64)
        fold = np.random.default_rng(FOLD_SEED).integers(0, FOLDS, len(y))
        for name, keys in _encoding_keys(*_zones(rides)).items():
            size = int(keys.max()) + 1
            out = np.empty(len(y))
            for f in range(FOLDS):
                mine = fold == f
                rest_keys, rest_y = keys[~mine], y[~mine]
                prior = float(rest_y.mean()) if len(rest_y) else float(y.mean())
                sums = np.bincount(rest_keys, weights=rest_y, minlength=size)
                counts = np.bincount(rest_keys, minlength=size)
                out[mine] = _smoothed(sums, counts, prior)[keys[mine]]
            frame[name] = out
        return frame

    def dicts(self, rides: pd.DataFrame) -> list[dict]:
        """The same features as one dict per ride (the course's DictVectorizer input)."""
        return self.frame(rides).to_dict(orient="records")

    def config(self) -> dict:
        """The JSON-ready config that `load_featurizer` reads back."""
        return {
            "version": FEATURES_VERSION,
            "feature_set": str(self.feature_set),
            "boroughs": self.boroughs,
            "service_zones": self.service_zones,
            "prior": self.prior,
            "smoothing": SMOOTHING,
            "folds": FOLDS,
            "fold_seed": FOLD_SEED,
            "encodings": self.encodings,
        }


def load_featurizer(path: Path) -> Featurizer:
    """Read a featurizer config written by `Featurizer.config` (or logged with a model)."""
    cfg = json.loads(Path(path).read_text())
    return Featurizer(
        feature_set=FeatureSet(cfg["feature_set"]),
        boroughs={int(k): v for k, v in cfg["boroughs"].items()},
        service_zones={int(k): v for k, v in cfg["service_zones"].items()},
        prior=cfg.get("prior"),
        encodings={
            name: {int(k): v for k, v in table.items()}
            for name, table in cfg.get("encodings", {}).items()
        },
    )
