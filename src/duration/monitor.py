"""Monitor a registered version on a new labelled month: realised quality (overall and by
slice), data quality, and drift of each input and of the predictions against the version's
reference profile. One MLflow run per (version, month), stepped by months since training.

Drift uses scipy's statistics as effect sizes, not p-values (at 50k rides every p-value is
tiny): the two-sample Kolmogorov-Smirnov statistic for numeric columns and the Jensen-Shannon
distance for categorical ones, each compared with `drift_threshold`. Evidently, the course's
library, does not import beside pandas 3 (see the README).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from duration import data, reference, registry, tracking
from duration.config import MONITOR_EXPERIMENT, Color, Settings, check_month, last_month
from duration.errors import DurationError

VERDICTS = ("ok", "drift", "degraded")
HOUR_BANDS = ([0, 6, 10, 16, 20, 24], ["00-06", "06-10", "10-16", "16-20", "20-24"])
DISTANCE_BANDS = ([-np.inf, 1, 3, 7, np.inf], ["<1 mi", "1-3 mi", "3-7 mi", "7+ mi"])


@dataclass
class Report:
    """What `monitor` measured and decided for one (version, month)."""

    run_id: str
    model_name: str
    model_version: str
    month: str
    color: str
    train_month: str
    months_since_training: int
    rows: int
    rmse: float
    mae: float
    reference_rmse: float
    rmse_ratio: float
    drift_share: float
    prediction_drift: float
    missing_share: float
    out_of_range_share: float
    unseen_zone_share: float
    verdict: str
    drift: list[dict] = field(default_factory=list)
    slices: list[dict] = field(default_factory=list)


def months_between(start: str, end: str) -> int:
    """Whole months from `start` to `end` (YYYY-MM), negative when `end` comes first."""
    (y0, m0), (y1, m1) = (map(int, start.split("-")), map(int, end.split("-")))
    return (y1 - y0) * 12 + (m1 - m0)


def months(start: str, end: str) -> list[str]:
    """Every YYYY-MM from `start` to `end`, inclusive (empty when `start` comes after)."""
    y, m = map(int, start.split("-"))
    out = []
    while f"{y:04d}-{m:02d}" <= end:
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def column_drift(ref: pd.Series, cur: pd.Series, categorical: bool) -> float:
    """Drift of one column: Jensen-Shannon distance (base 2, in [0, 1]) of the category
    shares, missing counted as a category; else the KS statistic of the non-missing values."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import ks_2samp

    if categorical:
        a = ref.astype("float64").fillna(-1).value_counts(normalize=True)
        b = cur.astype("float64").fillna(-1).value_counts(normalize=True)
        keys = a.index.union(b.index)
        p, q = a.reindex(keys, fill_value=0), b.reindex(keys, fill_value=0)
        return float(jensenshannon(p.to_numpy(), q.to_numpy(), base=2))
    a, b = ref.dropna().to_numpy(), cur.dropna().to_numpy()
    if len(a) == 0 or len(b) == 0:
        return 0.0 if len(a) == len(b) else 1.0
    return float(ks_2samp(a, b).statistic)


def drift_table(ref: pd.DataFrame, cur: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One row per input column: its statistic, score and whether it drifted."""
    rows = []
    for col in reference.NUMERIC + reference.CATEGORICAL:
        cat = col in reference.CATEGORICAL
        score = column_drift(ref[col], cur[col], cat)
        stat = "jensen-shannon" if cat else "kolmogorov-smirnov"
        rows.append({"column": col, "statistic": stat, "score": score})
    table = pd.DataFrame(rows)
    table["drifted"] = table["score"] >= threshold
    return table


def data_quality(profile: reference.Profile, cur: pd.DataFrame) -> dict[str, float]:
    """Missing share of the inputs, share of rides with a numeric input outside the training
    month's 0.1-99.9% range, and share of rides with a zone the training month never had."""
    out_of_range = np.zeros(len(cur), dtype=bool)
    for col, (lo, hi) in profile.meta["ranges"].items():
        v = cur[col]
        out_of_range |= (v.notna() & ((v < lo) | (v > hi))).to_numpy()
    zones = set(profile.meta["zones"])
    unseen = ~(cur["PULocationID"].isin(zones) & cur["DOLocationID"].isin(zones))
    return {
        "missing_share": float(cur.isna().to_numpy().mean()),
        "out_of_range_share": float(out_of_range.mean()),
        "unseen_zone_share": float(unseen.mean()),
    }


def slice_table(rides: pd.DataFrame, pred: np.ndarray, boroughs: dict[int, str]) -> pd.DataFrame:
    """RMSE and MAE by pickup borough, pickup hour band and distance band."""
    y = rides["duration"].to_numpy()
    keys = {
        "pickup_borough": rides["PULocationID"].map(boroughs).fillna("Unknown"),
        "hour_band": pd.cut(
            pd.to_datetime(rides["pickup_datetime"]).dt.hour,
            HOUR_BANDS[0],
            right=False,
            labels=HOUR_BANDS[1],
        ),  # fmt: skip
        "distance_band": pd.cut(
            rides["trip_distance"], DISTANCE_BANDS[0], labels=DISTANCE_BANDS[1]
        ),
    }
    err = pd.DataFrame({"se": (pred - y) ** 2, "ae": np.abs(pred - y)})
    rows = []
    for by, key in keys.items():
        g = err.groupby(np.asarray(key, dtype=object), sort=True)
        for name, part in g:
            rows.append({
                "slice_by": by, "slice": str(name), "rides": len(part),
                "rmse": float(np.sqrt(part["se"].mean())), "mae": float(part["ae"].mean()),
            })  # fmt: skip
    return pd.DataFrame(rows)


def borough_map(settings: Settings) -> dict[int, str]:
    """Zone ID -> pickup borough, from the zone table (the slices' first key)."""
    return data.zone_map(data.read_zones(data.download_zones(settings)))


def verdict(rmse_ratio: float, drift_share: float, prediction_drift: float, s: Settings) -> str:
    """`degraded` when RMSE passed `rmse_ratio` times the version's test RMSE; else `drift`
    when `drift_share` of the inputs or the predictions drifted; else `ok`."""
    if rmse_ratio > s.rmse_ratio:
        return "degraded"
    if drift_share >= s.drift_share or prediction_drift >= s.drift_threshold:
        return "drift"
    return "ok"


def _version(model_uri: str):
    """The registered version behind `model_uri`, or a one-line error."""
    registry.check_uri(model_uri)
    name, version = registry.resolve_version(model_uri)
    if not version:
        raise DurationError(
            f"{model_uri} is not a registered version: monitor takes models:/NAME@alias, "
            "models:/NAME/Stage or models:/NAME/VERSION"
        )
    return registry.check_version(name, version)


def profile_of(settings: Settings, mv) -> reference.Profile:
    """The version's reference profile; versions registered before profiles get one now."""
    found = reference.load(mv.run_id) if mv.run_id else None
    return found or registry.save_reference(settings, mv.name, mv.version)


def _check_after(mv, month: str, train_month: str) -> None:
    """A month at or before the version's training month is refused in one line."""
    if train_month and months_between(last_month(train_month), month) <= 0:
        raise DurationError(
            f"--month {month} is not after {mv.name} v{mv.version}'s training month "
            f"{train_month}: monitor a later month"
        )


def measure(settings: Settings, model_uri: str, color: Color | str, month: str) -> Report:
    """Score `month` with the version and compare it with the version's reference profile."""
    check_month(month)
    mv = _version(model_uri)
    _check_after(mv, month, mv.tags.get("train_month", ""))
    profile = profile_of(settings, mv)
    train_month = mv.tags.get("train_month") or profile.meta["train_month"]
    _check_after(mv, month, train_month)
    rides = data.load_processed(settings, color, month)
    if rides.empty or rides["duration"].isna().all():
        raise DurationError(f"{color} {month} has no labelled rides: pick another month")
    pred = registry.predict_frame(registry.load(f"models:/{mv.name}/{mv.version}"), rides, color)
    cur = reference.inputs(rides)
    drift = drift_table(profile.frame, cur, settings.drift_threshold)
    pred_drift = column_drift(profile.frame["prediction"], pd.Series(pred), categorical=False)
    scores = tracking.scores(rides["duration"].to_numpy(), pred)
    ref_rmse = float(mv.tags.get("test_rmse", "nan"))
    ratio = scores["rmse"] / ref_rmse if ref_rmse > 0 else math.nan
    share = float(drift["drifted"].mean())
    since = months_between(last_month(train_month), month)
    return Report(
        "", mv.name, mv.version, month, str(Color(color).value), train_month,
        since, len(rides), scores["rmse"], scores["mae"], ref_rmse,
        ratio, share, pred_drift, **data_quality(profile, cur),
        verdict=verdict(ratio, share, pred_drift, settings),
        drift=drift.to_dict("records"),
        slices=slice_table(rides, pred, borough_map(settings)).to_dict("records"),
    )  # fmt: skip


def html(r: Report) -> str:
    """A self-contained HTML report: the verdict, the figures, drift by column, the slices."""
    head = {k: v for k, v in asdict(r).items() if k not in ("drift", "slices")}
    tables = [
        pd.Series(head, name="value").to_frame().to_html(float_format="{:.4f}".format),
        pd.DataFrame(r.drift).to_html(index=False, float_format="{:.4f}".format),
        pd.DataFrame(r.slices).to_html(index=False, float_format="{:.4f}".format),
    ]
    title = f"{r.model_name} v{r.model_version} on {r.color} {r.month}: {r.verdict}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
        f"<h1>{title}</h1><h2>Summary</h2>{tables[0]}<h2>Drift by input column</h2>{tables[1]}"
        f"<h2>Quality by slice</h2>{tables[2]}</body></html>"
    )


METRICS = [
    "rmse", "mae", "reference_rmse", "rmse_ratio", "drift_share", "prediction_drift",
    "missing_share", "out_of_range_share", "unseen_zone_share",
]  # fmt: skip


def log(r: Report) -> str:
    """Record the report as the one run of (version, month); an earlier one is deleted."""
    import mlflow

    exp = tracking.experiment_id(MONITOR_EXPERIMENT)
    c = tracking.client()
    earlier = c.search_runs(
        [exp],
        f"tags.model_name = '{r.model_name}' and tags.model_version = '{r.model_version}' "
        f"and tags.month = '{r.month}'",
    )
    tags = {
        "model_name": r.model_name, "model_version": r.model_version, "month": r.month,
        "color": r.color, "train_month": r.train_month, "verdict": r.verdict,
        **tracking.process_tags(),
    }  # fmt: skip
    with tracking.active_run(
        experiment_id=exp, run_name=f"v{r.model_version}-{r.month}", tags=tags
    ) as run:
        step = r.months_since_training
        values = {k: getattr(r, k) for k in METRICS}
        values |= {f"drift_{d['column']}": d["score"] for d in r.drift}
        mlflow.log_metrics({k: v for k, v in values.items() if not math.isnan(v)}, step=step)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "report.html").write_text(html(r))
            pd.DataFrame(r.slices).to_csv(folder / "slices.csv", index=False)
            pd.DataFrame(r.drift).to_csv(folder / "drift.csv", index=False)
            mlflow.log_artifacts(tmp, "monitoring")
        run_id = run.info.run_id
    for old in earlier:
        c.delete_run(old.info.run_id)
    return run_id


def monitor(settings: Settings, model_uri: str, color: Color | str, month: str) -> Report:
    """Measure `month` with the version behind `model_uri` and log the run."""
    r = measure(settings, model_uri, color, month)
    r.run_id = log(r)
    return r
