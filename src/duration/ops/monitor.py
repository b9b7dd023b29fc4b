"""Monitor a registered version on a new labelled month: realised quality (overall and by
slice), data quality, and drift of each input and of the predictions against the version's
reference profile. One MLflow run per (version, month), stepped by months since training.

Drift uses scipy's statistics as effect sizes, not p-values (at 50k rides every p-value is
tiny): the two-sample Kolmogorov-Smirnov statistic for numeric columns and the Jensen-Shannon
distance for categorical ones, each compared with `drift_threshold`. Evidently, the course's
library, does not import beside pandas 3 (see docs/guides/monitoring.md).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from duration.core.metrics import scores, slice_table
from duration.core.schema import Color, check_month, last_month, months_between
from duration.data import prepare, reference, tlc
from duration.errors import DurationError
from duration.registry import profile
from duration.registry.scoring import predict_frame
from duration.registry.uris import check_uri, check_version, load, resolve_version
from duration.settings import Monitor, Settings
from duration.tracking import experiments, runs
from duration.tracking.client import client
from duration.tracking.names import MONITOR_EXPERIMENT

VERDICTS = ("ok", "drift", "degraded")


@dataclass(kw_only=True)
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


def column_drift(ref: pd.Series, cur: pd.Series, categorical: bool) -> float:
    """Drift of one column: Jensen-Shannon distance (base 2, in [0, 1]) of the category
    shares, missing counted as a category; else the KS statistic of the non-missing values."""
    from scipy.spatial.distance import jensenshannon  # deferred: scipy.stats is heavy
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


def data_quality(ref: reference.Profile, cur: pd.DataFrame) -> dict[str, float]:
    """Missing share of the inputs, share of rides with a numeric input outside the training
    month's 0.1-99.9% range, and share of rides with a zone the training month never had."""
    out_of_range = np.zeros(len(cur), dtype=bool)
    for col, (lo, hi) in ref.meta["ranges"].items():
        v = cur[col]
        out_of_range |= (v.notna() & ((v < lo) | (v > hi))).to_numpy()
    zones = set(ref.meta["zones"])
    unseen = ~(cur["PULocationID"].isin(zones) & cur["DOLocationID"].isin(zones))
    return {
        "missing_share": float(cur.isna().to_numpy().mean()),
        "out_of_range_share": float(out_of_range.mean()),
        "unseen_zone_share": float(unseen.mean()),
    }


def verdict(rmse_ratio: float, drift_share: float, prediction_drift: float, s: Monitor) -> str:
    """`degraded` when RMSE passed `rmse_ratio` times the version's test RMSE; else `drift`
    when `drift_share` of the inputs or the predictions drifted; else `ok`."""
    if rmse_ratio > s.rmse_ratio:
        return "degraded"
    if drift_share >= s.drift_share or prediction_drift >= s.drift_threshold:
        return "drift"
    return "ok"


def _version(model_uri: str) -> Any:
    """The registered version behind `model_uri`, or a one-line error."""
    check_uri(model_uri)
    name, version = resolve_version(model_uri)
    if not version:
        raise DurationError(
            f"{model_uri} is not a registered version: monitor takes models:/NAME@alias, "
            "models:/NAME/Stage or models:/NAME/VERSION"
        )
    return check_version(name, version)


def _check_after(mv: Any, month: str, train_month: str) -> None:
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
    ref = profile.of_version(settings, mv)
    train_month = mv.tags.get("train_month") or ref.meta["train_month"]
    _check_after(mv, month, train_month)
    color = Color(color)
    rides = prepare.load_processed(settings, color, month)
    if rides.empty or rides["duration"].isna().all():
        raise DurationError(f"{color} {month} has no labelled rides: pick another month")
    pred = predict_frame(load(f"models:/{mv.name}/{mv.version}"), rides, color.value)
    cur = reference.inputs(rides)
    drift = drift_table(ref.frame, cur, settings.monitor.drift_threshold)
    pred_drift = column_drift(ref.frame["prediction"], pd.Series(pred), categorical=False)
    s = scores(rides["duration"].to_numpy(), pred)
    ref_rmse = float(mv.tags.get("test_rmse", "nan"))
    ratio = s["rmse"] / ref_rmse if ref_rmse > 0 else math.nan
    share = float(drift["drifted"].mean())
    return Report(
        run_id="", model_name=mv.name, model_version=mv.version, month=month,
        color=color.value, train_month=train_month,
        months_since_training=months_between(last_month(train_month), month),
        rows=len(rides), rmse=s["rmse"], mae=s["mae"], reference_rmse=ref_rmse,
        rmse_ratio=ratio, drift_share=share, prediction_drift=pred_drift,
        **data_quality(ref, cur),
        verdict=verdict(ratio, share, pred_drift, settings.monitor),
        drift=drift.to_dict("records"),
        slices=slice_table(rides, pred, tlc.boroughs(settings)).to_dict("records"),
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
    import mlflow  # deferred: MLflow takes seconds to import

    exp = experiments.experiment_id(MONITOR_EXPERIMENT)
    c = client()
    earlier = c.search_runs(
        [exp],
        f"tags.model_name = '{r.model_name}' and tags.model_version = '{r.model_version}' "
        f"and tags.month = '{r.month}'",
    )
    tags = {
        "model_name": r.model_name, "model_version": r.model_version, "month": r.month,
        "color": r.color, "train_month": r.train_month, "verdict": r.verdict,
        **runs.process_tags(),
    }  # fmt: skip
    with runs.active_run(
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
