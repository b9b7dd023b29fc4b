"""Monitor a registered version on a new labelled month: realised quality (overall and by
slice), data quality, and drift of each input and of the predictions against the version's
reference profile (the statistics are `duration.core.drift`'s). One MLflow run per
(version, month), stepped by months since training.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from duration.core.drift import Thresholds, column_drift, data_quality, drift_table, verdict
from duration.core.metrics import scores, slice_table
from duration.core.schema import Color, check_month, last_month, months_between
from duration.data import prepare, reference, tlc
from duration.errors import DurationError
from duration.registry import profile
from duration.registry.evaluation import predict_frame
from duration.registry.uris import check_uri, check_version, load, resolve_version
from duration.settings import Monitor, Settings
from duration.tracking import runs
from duration.tracking.names import MONITOR_EXPERIMENT


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


def thresholds(m: Monitor) -> Thresholds:
    """The verdict's thresholds, as the settings give them."""
    return Thresholds(
        drift_threshold=m.drift_threshold, drift_share=m.drift_share, rmse_ratio=m.rmse_ratio
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
    t = thresholds(settings.monitor)
    drift = drift_table(ref.frame, cur, reference.NUMERIC, reference.CATEGORICAL, t.drift_threshold)
    pred_drift = column_drift(ref.frame["prediction"], pd.Series(pred), categorical=False)
    s = scores(rides["duration"].to_numpy(), pred)
    ref_rmse = float(mv.tags.get("test_rmse", "nan"))
    ratio = s["rmse"] / ref_rmse if ref_rmse > 0 else math.nan
    share = float(drift["drifted"].mean())
    return Report(
        run_id="",
        model_name=mv.name,
        model_version=mv.version,
        month=month,
        color=color.value,
        train_month=train_month,
        months_since_training=months_between(last_month(train_month), month),
        rows=len(rides),
        rmse=s["rmse"],
        mae=s["mae"],
        reference_rmse=ref_rmse,
        rmse_ratio=ratio,
        drift_share=share,
        prediction_drift=pred_drift,
        **data_quality(cur, ref.meta["ranges"], ref.meta["zones"]),
        verdict=verdict(ratio, share, pred_drift, t),
        drift=drift.to_dict("records"),
        slices=slice_table(rides, pred, tlc.boroughs(settings)).to_dict("records"),
    )


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
    "rmse",
    "mae",
    "reference_rmse",
    "rmse_ratio",
    "drift_share",
    "prediction_drift",
    "missing_share",
    "out_of_range_share",
    "unseen_zone_share",
]


def log(r: Report, data: Mapping[str, str] | None = None) -> str:
    """Record the report as the one run of (version, month); an earlier one is deleted. With
    `data` (the month's `data_digest`, and a `previous_digest` when it was re-published),
    the run is the one of (version, month, data): a new file's run keeps the old file's."""
    import mlflow  # deferred: MLflow takes seconds to import

    key = {"model_name": r.model_name, "model_version": r.model_version, "month": r.month}
    data = dict(data or {})
    if "data_digest" in data:
        key["data_digest"] = data.pop("data_digest")
    tags = {"color": r.color, "train_month": r.train_month, "verdict": r.verdict, **data}
    name = f"v{r.model_version}-{r.month}"
    with runs.replace_run(MONITOR_EXPERIMENT, key, name, tags) as run:
        values = {k: getattr(r, k) for k in METRICS}
        values |= {f"drift_{d['column']}": d["score"] for d in r.drift}
        kept = {k: v for k, v in values.items() if not math.isnan(v)}
        mlflow.log_metrics(kept, step=r.months_since_training)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "report.html").write_text(html(r))
            pd.DataFrame(r.slices).to_csv(folder / "slices.csv", index=False)
            pd.DataFrame(r.drift).to_csv(folder / "drift.csv", index=False)
            mlflow.log_artifacts(tmp, "monitoring")
        return str(run.info.run_id)


def monitor(
    settings: Settings,
    model_uri: str,
    color: Color | str,
    month: str,
    data: Mapping[str, str] | None = None,
) -> Report:
    """Measure `month` with the version behind `model_uri` and log the run (`data`: see
    `log`)."""
    r = measure(settings, model_uri, color, month)
    r.run_id = log(r, data)
    return r
