"""Feature frames per feature set, and a DictVectorizer built straight from columns.

`fit_vectorizer` and `transform` give exactly what `DictVectorizer.fit_transform` and
`DictVectorizer.transform` give on `frame.to_dict(orient="records")` (same feature names,
vocabulary, values, explicit zeros and NaNs), without building a Python dict per ride.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field, replace
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


def _zones(rides: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Pickup and dropoff zone IDs as int64 arrays."""
    pu = rides["PULocationID"].to_numpy(dtype=np.int64)
    do = rides["DOLocationID"].to_numpy(dtype=np.int64)
    return pu, do


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


@dataclass(frozen=True)
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
        pu, do = _zones(rides)
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
        if self.prior is None:
            raise DurationError(
                "the default features need mean-duration encodings fitted on a training month: "
                "call Featurizer.fit, or run `duration vectorize` to make them"
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
        for name, keys in _encoding_keys(pu, do).items():
            table = self.encodings[name]
            lut = np.full(max(max(table, default=0), int(keys.max(initial=0))) + 1, self.prior)
            lut[np.fromiter(table, np.int64, len(table))] = list(table.values())
            cols[name] = lut[keys]
        return pd.DataFrame(cols, index=rides.index)

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


ROWS_PER_BLOCK = 1 << 16  # transform builds rows in blocks: memory is the output plus one block


@dataclass(frozen=True)
class _Column:
    """One feature column, ready to emit (vocabulary index, value) for any block of rows."""

    lut: np.ndarray  # vocabulary index (-1 if unseen) per code, then the missing-value entry
    codes: np.ndarray | None = None  # categorical codes, -1 for missing
    numbers: pd.Series | None = None  # a numeric column (lut then holds its one index)

    def known(self) -> np.ndarray | bool:
        """Per row, whether this column gives the row an entry."""
        if self.codes is None:
            return bool(self.lut[0] >= 0)
        return (self.lut >= 0)[self.codes]

    def block(self, a: int, b: int, dtype) -> tuple[np.ndarray, np.ndarray]:
        if self.codes is None:
            values = self.numbers.iloc[a:b].to_numpy(dtype=np.float64, na_value=np.nan)
            return self.lut[0], values
        codes = self.codes[a:b]
        values = np.ones(b - a, dtype=dtype)
        values[codes == -1] = np.nan  # DictVectorizer keeps a missing value as NaN
        return self.lut[codes], values


def _column(s: pd.Series, vocab: dict[str, int], sep: str) -> _Column:
    if not _is_categorical(s):
        return _Column(np.array([vocab.get(str(s.name), -1)], np.int32), numbers=s)
    codes, labels = _column_codes(s)
    # code -1 (missing) picks the last entry: DictVectorizer keys it by the column name
    names = [f"{s.name}{sep}{label}" for label in labels]
    lut = np.array([vocab.get(name, -1) for name in names] + [vocab.get(s.name, -1)], np.int32)
    return _Column(lut, codes=codes)


def _layout(luts: list[np.ndarray]) -> list[int] | None:
    """A column order that sorts every row's indices, if the columns' index ranges do not
    interleave (the usual case: a column's names share its prefix); else None."""
    spans = sorted(
        (
            (int(lut[lut >= 0].min()), int(lut[lut >= 0].max()), j)
            for j, lut in enumerate(luts)
            if (lut >= 0).any()
        ),
    )
    if any(a[1] >= b[0] for a, b in zip(spans, spans[1:], strict=False)):
        return None
    return [j for *_, j in spans] + [j for j, lut in enumerate(luts) if not (lut >= 0).any()]


def transform(dv: DictVectorizer, features: pd.DataFrame) -> sp.csr_matrix:
    """Exactly `dv.transform(features.to_dict(orient="records"))`, built from columns.

    Counts each row's entries first, allocates the CSR arrays once, then fills them a block
    of rows at a time, in sorted column order (or sorting each row where names interleave).
    """
    n, k = len(features), len(features.columns)
    if n == 0:
        raise ValueError("Sample sequence X is empty.")  # as DictVectorizer says
    cols = [_column(features[c], dv.vocabulary_, dv.separator) for c in features.columns]
    order = _layout([c.lut for c in cols])
    counts = np.zeros(n, dtype=np.int32)
    for c in cols:
        counts += c.known()
    index_dtype = np.int32 if int(counts.sum()) < np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(n + 1, dtype=index_dtype)
    np.cumsum(counts, out=indptr[1:])
    del counts
    data = np.empty(int(indptr[-1]), dtype=dv.dtype)
    indices = np.empty(int(indptr[-1]), dtype=index_dtype)
    for a in range(0, n, ROWS_PER_BLOCK):
        b = min(n, a + ROWS_PER_BLOCK)
        idx = np.empty((b - a, k), dtype=np.int32)
        val = np.empty((b - a, k), dtype=dv.dtype)
        for pos, j in enumerate(order if order is not None else range(k)):
            idx[:, pos], val[:, pos] = cols[j].block(a, b, dv.dtype)
        if order is None:  # interleaved index ranges: sort each row
            perm = np.argsort(np.where(idx < 0, np.iinfo(np.int32).max, idx), axis=1, kind="stable")
            idx = np.take_along_axis(idx, perm, axis=1)
            val = np.take_along_axis(val, perm, axis=1)
        keep = idx >= 0
        data[indptr[a] : indptr[b]] = val[keep]
        indices[indptr[a] : indptr[b]] = idx[keep]
    x = sp.csr_matrix((data, indices, indptr), shape=(n, len(dv.feature_names_)))
    x.has_sorted_indices = True
    return x


def fit_vectorizer(
    features: pd.DataFrame, dtype: type = np.float64
) -> tuple[DictVectorizer, sp.csr_matrix]:
    """A fitted DictVectorizer and the training matrix, equal to `fit_transform` on dicts."""
    dv = DictVectorizer(dtype=dtype)
    names = sorted(_names(features, dv.separator))
    dv.feature_names_ = names
    dv.vocabulary_ = {name: i for i, name in enumerate(names)}
    return dv, transform(dv, features)


def csr_identical(a: sp.spmatrix, b: sp.spmatrix) -> bool:
    """True when two sparse matrices store the same entries (explicit zeros and NaNs too)."""
    a, b = sp.csr_matrix(a, copy=True), sp.csr_matrix(b, copy=True)
    for m in (a, b):
        m.has_sorted_indices = False  # do not trust the flag: really sort
        m.sort_indices()
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


def save_split(out: Path, split: Split) -> None:
    """Write one month's X and y into a stage directory."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / f"X_{split.month}.npz") as tmp:
        _save_npz(tmp, split.X)
    with atomic_path(out / f"y_{split.month}.npy") as tmp:
        _save_npy(tmp, split.y)


def save_stage(out: Path, dv: DictVectorizer, featurizer: Featurizer, meta: dict) -> None:
    """Write the fitted DictVectorizer and the featurizer config (after the months' splits:
    a stage directory without `preprocessor.b` is incomplete and gets rebuilt)."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "preprocessor.b") as tmp:
        tmp.write_bytes(pickle.dumps(dv))
    cfg = {
        "version": FEATURES_VERSION,
        "feature_set": str(featurizer.feature_set),
        "boroughs": featurizer.boroughs,
        "service_zones": featurizer.service_zones,
        "prior": featurizer.prior,
        "smoothing": SMOOTHING,
        "folds": FOLDS,
        "fold_seed": FOLD_SEED,
        "encodings": featurizer.encodings,
        **meta,
    }
    with atomic_path(out / "featurizer.json") as tmp:
        tmp.write_text(json.dumps(cfg, indent=1))


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
        cfg.get("prior"),
        {
            name: {int(k): v for k, v in table.items()}
            for name, table in cfg.get("encodings", {}).items()
        },
    )


def _current(out: Path, train_src: Path) -> bool:
    """True when a stage directory was made by these feature definitions from this month."""
    dv_path, cfg_path = out / "preprocessor.b", out / "featurizer.json"
    if not (dv_path.exists() and cfg_path.exists()):
        return False
    if dv_path.stat().st_mtime < train_src.stat().st_mtime:
        return False
    return json.loads(cfg_path.read_text()).get("version") == FEATURES_VERSION


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
    columns = [*NEEDS[fs], *(START_CODES if fs is FeatureSet.default else []), "duration"]
    fresh = _current(out, train_src)
    if fresh:
        dv, featurizer = load_dv(out), load_featurizer(out / "featurizer.json")
    else:
        # A new fit makes every matrix in the directory stale: remove them before writing.
        for old in [out / "preprocessor.b", *out.glob("X_*.npz"), *out.glob("y_*.npy")]:
            old.unlink(missing_ok=True)
        featurizer = Featurizer(fs)
        if fs is FeatureSet.default:
            zones = data.read_zones(data.download_zones(settings))
            featurizer = Featurizer(fs, data.zone_map(zones), data.zone_map(zones, "service_zone"))
        rides = data.load_processed(settings, color, train, columns)
        featurizer = featurizer.fit(rides)
        dv, x = fit_vectorizer(featurizer.train_frame(rides), DTYPES[fs])
        save_split(out, Split(train, x, rides["duration"].to_numpy()))
        del rides, x  # one month in memory at a time
    for month in dict.fromkeys(months):
        check_month(month)
        if month == train or (fresh and (out / f"X_{month}.npz").exists()):
            continue
        rides = data.load_processed(settings, color, month, columns)
        x = transform(dv, featurizer.frame(rides))
        save_split(out, Split(month, x, rides["duration"].to_numpy()))
        del rides, x
    meta = {"color": Color(color).value, "train": train, "n_features": len(dv.feature_names_)}
    save_stage(out, dv, featurizer, meta)
    return out
