"""The feature stage: vectorized months on disk (save, load, freshness) and the run inputs.

One folder per (color, feature set, training month) under `data/features/` holds the fitted
DictVectorizer (`preprocessor.b`, as the course logs it), the featurizer config and each
month's X and y.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:  # loading a stage's pickled DictVectorizer imports scikit-learn itself
    from sklearn.feature_extraction import DictVectorizer

from duration.core.featurize import (
    DTYPES,
    FEATURES_VERSION,
    NEEDS,
    START_CODES,
    Featurizer,
    load_featurizer,
)
from duration.core.schema import Color, FeatureSet, check_month, span_months
from duration.core.vectorizer import fit_vectorizer, transform
from duration.data import prepare, tlc
from duration.errors import DurationError
from duration.infra.files import atomic_path
from duration.settings import Settings


def features_dir(settings: Settings, color: Color | str, fs: FeatureSet | str, train: str) -> Path:
    """Where the vectorized months for one (color, feature set, training month) live."""
    return settings.paths.features / f"{Color(color).value}-{FeatureSet(fs).value}-train-{train}"


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
    cfg = {**featurizer.config(), **meta}
    with atomic_path(out / "featurizer.json") as tmp:
        tmp.write_text(json.dumps(cfg, indent=1))


def _save_npz(path: Path, x: sp.csr_matrix) -> None:
    with open(path, "wb") as f:
        sp.save_npz(f, x, compressed=False)


def _save_npy(path: Path, y: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, y)


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
    span_months(month, "--month")
    xp, yp = out / f"X_{month}.npz", out / f"y_{month}.npy"
    if not (xp.exists() and yp.exists()):
        val = f" --val {month}" if month != train else ""
        raise DurationError(
            f"no {fs} features for {Color(color).value} {month} (trained on {train}) in {out}: "
            f"run `duration vectorize --color {Color(color).value} --features {fs} "
            f"--train {train}{val}` first"
        )
    return Split(month, sp.load_npz(xp).tocsr(), np.load(yp))


def _fit(
    settings: Settings, color: Color | str, fs: FeatureSet, train: str, out: Path
) -> tuple[DictVectorizer, Featurizer]:
    """Fit the featurizer and the DictVectorizer on the training month; write its split.

    A new fit makes every matrix in the folder stale: they are removed before writing.
    """
    for old in [out / "preprocessor.b", *out.glob("X_*.npz"), *out.glob("y_*.npy")]:
        old.unlink(missing_ok=True)
    featurizer = Featurizer(feature_set=fs)
    if fs is FeatureSet.default:
        zones = tlc.read_zones(tlc.download_zones(settings))
        featurizer = Featurizer(
            feature_set=fs,
            boroughs=tlc.zone_map(zones),
            service_zones=tlc.zone_map(zones, "service_zone"),
        )
    rides = prepare.load_processed(settings, color, train, _columns(fs))
    featurizer = featurizer.fit(rides)
    dv, x = fit_vectorizer(featurizer.train_frame(rides), DTYPES[fs])
    save_split(out, Split(train, x, rides["duration"].to_numpy()))
    return dv, featurizer


def _columns(fs: FeatureSet) -> list[str]:
    """The prepared columns a feature set reads, and the target."""
    return [*NEEDS[fs], *(START_CODES if fs is FeatureSet.default else []), "duration"]


def vectorize(
    settings: Settings, color: Color | str, fs: FeatureSet | str, train: str, months: list[str]
) -> Path:
    """Fit the DictVectorizer on the training month (or span: "2021-02+2021-03") and
    transform the other months.

    Downloads and prepares what is missing; months already vectorized are skipped. One
    month is in memory at a time after the fit.
    """
    fs = FeatureSet(fs)
    out = features_dir(settings, color, fs, train)
    sources = [prepare.prepare(settings, color, m) for m in span_months(train, "--train")]
    fresh = _current(out, max(sources, key=lambda p: p.stat().st_mtime))
    if fresh:
        dv, featurizer = load_dv(out), load_featurizer(out / "featurizer.json")
    else:
        dv, featurizer = _fit(settings, color, fs, train, out)
    for month in dict.fromkeys(months):
        check_month(month)
        if month == train or (fresh and (out / f"X_{month}.npz").exists()):
            continue
        rides = prepare.load_processed(settings, color, month, _columns(fs))
        x = transform(dv, featurizer.frame(rides))
        save_split(out, Split(month, x, rides["duration"].to_numpy()))
        del rides, x
    meta = {"color": Color(color).value, "train": train, "n_features": len(dv.feature_names_)}
    save_stage(out, dv, featurizer, meta)
    return out


@dataclass(frozen=True, kw_only=True)
class Inputs:
    """Everything a training run needs, loaded once: matrices, rides, featurizer, vectorizer."""

    settings: Settings
    color: Color
    features: FeatureSet
    train: str
    val: str
    stage: Path
    tr: Split
    va: Split
    hours_va: np.ndarray  # pickup hour of each validation ride, for the RMSE-by-hour plot
    example: pd.DataFrame  # the first validation rides, for the model's input example
    featurizer: Featurizer
    dv: DictVectorizer


def _validation_extras(path: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Pickup hours and the first rides of the validation month (not the whole frame)."""
    pickup = pd.read_parquet(path, columns=["pickup_datetime"])["pickup_datetime"]
    return pickup.dt.hour.to_numpy(np.int8), prepare.first_rows(path, 5)


def load_inputs(
    settings: Settings, color: Color | str, fs: FeatureSet | str, train: str, val: str
) -> Inputs:
    """Load the vectorized months (or say which command makes them) and their rides."""
    color, fs = Color(color), FeatureSet(fs)
    stage = features_dir(settings, color, fs, train)
    tr = load_split(settings, color, fs, train, train)
    va = load_split(settings, color, fs, train, val)
    hours_va, example = _validation_extras(prepare.processed_path(settings, color, val))
    return Inputs(
        settings=settings,
        color=color,
        features=fs,
        train=train,
        val=val,
        stage=stage,
        tr=tr,
        va=va,
        hours_va=hours_va,
        example=example,
        featurizer=load_featurizer(stage / "featurizer.json"),
        dv=load_dv(stage),
    )
