"""Feature frames per feature set, and a DictVectorizer built straight from columns.

`fit_vectorizer` and `transform` give exactly what `DictVectorizer.fit_transform` and
`DictVectorizer.transform` give on `frame.to_dict(orient="records")` (same feature names,
vocabulary, values, explicit zeros and NaNs), without building a Python dict per ride.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction import DictVectorizer

from duration.config import Color, FeatureSet, Settings, check_month
from duration.errors import DurationError
from duration.files import atomic_path

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


def _categorical(keys: np.ndarray, label) -> pd.Categorical:
    """Integer keys -> a Categorical whose string labels are made once per distinct key."""
    codes, uniques = pd.factorize(keys, sort=True)
    return pd.Categorical.from_codes(codes, categories=[label(u) for u in uniques])


def _lookup(ids: np.ndarray, mapping: dict[int, str]) -> pd.Categorical:
    """Zone IDs -> a Categorical of zone-table labels ("Unknown" for IDs not in the table)."""
    names = sorted(set(mapping.values()) | {"Unknown"})
    lut = np.full(max([*mapping, int(ids.max(initial=0))]) + 1, names.index("Unknown"))
    for loc, label in mapping.items():
        lut[loc] = names.index(label)
    return pd.Categorical.from_codes(lut[ids], categories=names)


def _code(values: pd.Series | None, n: int) -> pd.Categorical:
    """A numeric code column -> labels '1', '2', ... with 'unknown' for missing."""
    if values is None:
        return pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=["unknown"])
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    keys = np.where(np.isnan(v), -1, np.round(v)).astype(np.int64)
    return _categorical(keys, lambda k: "unknown" if k < 0 else str(k))


@dataclass(frozen=True)
class Featurizer:
    """Turns canonical rides into a feature frame: categorical columns plus numeric ones.

    `course` is the course notebook's: the zone pair as a string, plus trip_distance.
    `default` uses only what is known when the ride starts, plus trip_distance: zone IDs and
    their pair code (numeric, so trees split them cheaply; a one-hot zone pair has 13k columns
    and makes xgboost ~50x slower for no gain), the zones' boroughs and service zones, pickup
    time of day and weekday, and the vendor, rate code, trip type and passenger count.
    """

    feature_set: FeatureSet = FeatureSet.default
    boroughs: dict[int, str] = field(default_factory=dict)
    service_zones: dict[int, str] = field(default_factory=dict)

    @property
    def needs(self) -> list[str]:
        """The canonical ride columns this feature set requires."""
        return NEEDS[FeatureSet(self.feature_set)]

    def frame(self, rides: pd.DataFrame) -> pd.DataFrame:
        """Feature columns for each ride: Categorical (string labels) or float."""
        missing = [c for c in self.needs if c not in rides]
        if missing:
            raise DurationError(
                f"the {self.feature_set} features need columns {missing}, which the input lacks"
            )
        if len(rides) and rides["trip_distance"].isna().all():
            raise DurationError(
                f"the {self.feature_set} features need trip_distance, which these rides lack "
                "(fhv files have none): use green or yellow"
            )
        pu = rides["PULocationID"].to_numpy(dtype=np.int64)
        do = rides["DOLocationID"].to_numpy(dtype=np.int64)
        if FeatureSet(self.feature_set) is FeatureSet.course:
            return pd.DataFrame(
                {
                    "PU_DO": _categorical(
                        pu * 10_000 + do, lambda k: f"{k // 10_000}_{k % 10_000}"
                    ),
                    "trip_distance": rides["trip_distance"].to_numpy(dtype=np.float64),
                },
                index=rides.index,
            )
        pickup = rides["pickup_datetime"]
        cols: dict[str, object] = {
            "PU_borough": _lookup(pu, self.boroughs),
            "DO_borough": _lookup(do, self.boroughs),
            "PU_service_zone": _lookup(pu, self.service_zones),
            "DO_service_zone": _lookup(do, self.service_zones),
        }
        for name in START_CODES:
            cols[name] = _code(rides.get(name), len(rides))
        cols["PULocationID"] = pu.astype(np.float64)
        cols["DOLocationID"] = do.astype(np.float64)
        cols["PU_DO"] = (pu * 1000 + do).astype(np.float64)
        cols["pickup_hour"] = (pickup.dt.hour + pickup.dt.minute / 60).to_numpy(np.float64)
        cols["pickup_weekday"] = pickup.dt.day_of_week.to_numpy(np.float64)
        cols["trip_distance"] = rides["trip_distance"].to_numpy(dtype=np.float64)
        return pd.DataFrame(cols, index=rides.index)

    def dicts(self, rides: pd.DataFrame) -> list[dict]:
        """The same features as one dict per ride (the course's DictVectorizer input)."""
        return self.frame(rides).to_dict(orient="records")


# --------------------------------------------------------------------------- vectorizer


def _column_codes(s: pd.Series) -> tuple[np.ndarray, list]:
    """Codes (-1 for missing) and labels of a categorical or string column."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        return s.cat.codes.to_numpy(), list(s.cat.categories)
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    return codes, list(uniques)


def _is_categorical(s: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s))


def _names(features: pd.DataFrame, sep: str) -> set[str]:
    names: set[str] = set()
    for col in features.columns:
        s = features[col]
        if not _is_categorical(s):
            names.add(col)
            continue
        codes, labels = _column_codes(s)
        present = np.unique(codes)
        if present.size and present[0] == -1:
            names.add(col)  # a missing value: DictVectorizer keys it by the column name
            present = present[1:]
        names.update(f"{col}{sep}{labels[i]}" for i in present)
    return names


def _entries(features: pd.DataFrame, vocab: dict[str, int], sep: str):
    """Per column: the vocabulary index (-1 if unseen) and the value of each row."""
    n = len(features)
    for col in features.columns:
        s = features[col]
        if not _is_categorical(s):
            yield np.full(n, vocab.get(col, -1)), s.to_numpy(dtype=np.float64, na_value=np.nan)
            continue
        codes, labels = _column_codes(s)
        lut = np.array([vocab.get(f"{col}{sep}{label}", -1) for label in labels] + [-1])
        idx = lut[codes]  # code -1 picks the trailing -1
        values = np.ones(n)
        missing = codes == -1
        if missing.any():
            idx[missing] = vocab.get(col, -1)
            values[missing] = np.nan
        yield idx, values


def transform(dv: DictVectorizer, features: pd.DataFrame) -> sp.csr_matrix:
    """Exactly `dv.transform(features.to_dict(orient="records"))`, built from columns."""
    n, k = len(features), len(features.columns)
    if n == 0:
        raise ValueError("Sample sequence X is empty.")  # as DictVectorizer says
    idx = np.empty((n, k), dtype=np.int64)
    val = np.empty((n, k), dtype=np.float64)
    for j, (i, v) in enumerate(_entries(features, dv.vocabulary_, dv.separator)):
        idx[:, j], val[:, j] = i, v
    order = np.argsort(np.where(idx < 0, np.iinfo(np.int64).max, idx), axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    val = np.take_along_axis(val, order, axis=1)
    keep = idx >= 0
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    x = sp.csr_matrix(
        (val[keep].astype(dv.dtype), idx[keep].astype(np.int32), indptr),
        shape=(n, len(dv.feature_names_)),
    )
    x.has_sorted_indices = True
    return x


def fit_vectorizer(features: pd.DataFrame) -> tuple[DictVectorizer, sp.csr_matrix]:
    """A fitted DictVectorizer and the training matrix, equal to `fit_transform` on dicts."""
    dv = DictVectorizer()
    names = sorted(_names(features, dv.separator))
    dv.feature_names_ = names
    dv.vocabulary_ = {name: i for i, name in enumerate(names)}
    return dv, transform(dv, features)


def csr_identical(a: sp.spmatrix, b: sp.spmatrix) -> bool:
    """True when two sparse matrices store the same entries (explicit zeros and NaNs too)."""
    a, b = sp.csr_matrix(a, copy=True), sp.csr_matrix(b, copy=True)
    a.sort_indices()
    b.sort_indices()
    return (
        a.shape == b.shape
        and np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
        and np.array_equal(a.data, b.data, equal_nan=True)
    )


# --------------------------------------------------------------------------- stage files


def features_dir(settings: Settings, color: Color | str, fs: FeatureSet | str, train: str) -> Path:
    """Where the vectorized months for one (color, feature set, training month) live."""
    return settings.features_dir / f"{Color(color).value}-{FeatureSet(fs).value}-train-{train}"


@dataclass(frozen=True)
class Split:
    """One vectorized month: the matrix, the target and where they are stored."""

    month: str
    X: sp.csr_matrix
    y: np.ndarray


def _atomic(path: Path, write) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def save_stage(
    out: Path, dv: DictVectorizer, featurizer: Featurizer, splits: list[Split], meta: dict
) -> None:
    """Write the fitted DictVectorizer, the featurizer config and each month's X and y."""
    out.mkdir(parents=True, exist_ok=True)
    for split in splits:
        _atomic(out / f"X_{split.month}.npz", lambda p, s=split: _save_npz(p, s.X))
        _atomic(out / f"y_{split.month}.npy", lambda p, s=split: _save_npy(p, s.y))
    _atomic(out / "preprocessor.b", lambda p: p.write_bytes(pickle.dumps(dv)))
    cfg = {
        "feature_set": str(featurizer.feature_set),
        "boroughs": featurizer.boroughs,
        "service_zones": featurizer.service_zones,
        **meta,
    }
    _atomic(out / "featurizer.json", lambda p: p.write_text(json.dumps(cfg, indent=1)))


def _save_npz(path: Path, x: sp.csr_matrix) -> None:
    with open(path, "wb") as f:
        sp.save_npz(f, x, compressed=False)


def _save_npy(path: Path, y: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, y)


def load_featurizer(path: Path) -> Featurizer:
    """Read a featurizer config written by `save_stage` (or logged with a model)."""
    cfg = json.loads(Path(path).read_text())
    return Featurizer(
        FeatureSet(cfg["feature_set"]),
        {int(k): v for k, v in cfg["boroughs"].items()},
        {int(k): v for k, v in cfg["service_zones"].items()},
    )


def load_dv(out: Path) -> DictVectorizer:
    """The fitted DictVectorizer of a stage directory."""
    with open(out / "preprocessor.b", "rb") as f:
        return pickle.load(f)  # noqa: S301 - written by this project


def load_split(
    settings: Settings, color: Color | str, fs: FeatureSet | str, train: str, month: str
) -> Split:
    """A vectorized month, or a one-line error saying which command makes it."""
    out = features_dir(settings, color, fs, train)
    xp, yp = out / f"X_{check_month(month)}.npz", out / f"y_{month}.npy"
    if not (xp.exists() and yp.exists()):
        val = f" --val {month}" if month != train else ""
        raise DurationError(
            f"no {fs} features for {Color(color).value} {month} (trained on {train}) in {out}: "
            f"run `duration vectorize --color {Color(color).value} --features {fs} "
            f"--train {train}{val}` first"
        )
    return Split(month, sp.load_npz(xp).tocsr(), np.load(yp))


def vectorize(
    settings: Settings, color: Color | str, fs: FeatureSet | str, train: str, months: list[str]
) -> Path:
    """Fit the DictVectorizer on the training month and transform the other months.

    Downloads and prepares what is missing; months already vectorized are skipped.
    """
    from duration import data

    fs = FeatureSet(fs)
    out = features_dir(settings, color, fs, train)
    train_src = data.prepare(settings, color, train)
    dv_path = out / "preprocessor.b"
    fresh = dv_path.exists() and dv_path.stat().st_mtime >= train_src.stat().st_mtime
    if fresh:
        dv, featurizer = load_dv(out), load_featurizer(out / "featurizer.json")
        splits = []
    else:
        featurizer = Featurizer(fs)
        if fs is FeatureSet.default:
            zones = data.read_zones(data.download_zones(settings))
            featurizer = Featurizer(fs, data.zone_map(zones), data.zone_map(zones, "service_zone"))
        rides = pd.read_parquet(train_src)
        dv, x = fit_vectorizer(featurizer.frame(rides))
        splits = [Split(train, x, rides["duration"].to_numpy())]
    for month in dict.fromkeys(months):
        check_month(month)
        if month == train or (fresh and (out / f"X_{month}.npz").exists()):
            continue
        rides = data.load_processed(settings, color, month)
        splits.append(
            Split(month, transform(dv, featurizer.frame(rides)), rides["duration"].to_numpy())
        )
    meta = {"color": Color(color).value, "train": train, "n_features": len(dv.feature_names_)}
    save_stage(out, dv, featurizer, splits, meta)
    return out
