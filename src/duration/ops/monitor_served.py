"""Monitor what was served: the prediction log joined with a labelled month's real durations.

Each logged ride whose `ride_id` names a ride of the month (`duration traffic` sends them)
is joined to that ride's duration in the prepared month. Per model version: the rides it
served, the share that found their label, and its realised RMSE, MAE and slice table. One
MLflow run per (color, month) in the monitoring experiment, as the offline monitor keeps.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from duration.core.metrics import scores, slice_table
from duration.core.rides import ride_index
from duration.core.schema import IDENTITY, Color, check_month
from duration.data import prepare, tlc
from duration.errors import DurationError, NotPublished
from duration.serving import log_read
from duration.settings import Settings
from duration.tracking import runs
from duration.tracking.names import MONITOR_EXPERIMENT


@dataclass(frozen=True, kw_only=True)
class ServedVersion:
    """What one version served of the month, and how well."""

    model_name: str
    model_version: str
    arms: str  # the arms it served as, comma-separated
    served_rides: int
    labelled_rides: int
    labelled_share: float
    rmse: float
    mae: float


@dataclass(kw_only=True)
class ServedReport:
    """What `measure` found: one row per version, and each version's slices."""

    run_id: str
    month: str
    color: str
    logged_rides: int  # every row of the log
    month_rides: int  # rows whose ride_id names a ride of this month
    versions: list[ServedVersion] = field(default_factory=list)
    slices: list[dict] = field(default_factory=list)
    warning: str | None = None  # the log's files that could not be read, in one line


def logged(settings: Settings) -> log_read.LogTable:
    """The whole log; a one-line refusal when nothing was logged yet."""
    log = log_read.read(settings.paths.serve_log)
    if log.table.num_rows == 0:
        raise DurationError(
            f"nothing served has been logged in {settings.paths.serve_log} yet: serve rides "
            "first (`duration traffic --month YYYY-MM`)"
        )
    return log


def _labels(settings: Settings, color: Color, month: str) -> pd.DataFrame:
    try:
        return prepare.load_processed(settings, color, month)
    except NotPublished as e:
        raise DurationError(
            f"{color.value} {month}'s real durations are not published yet ({e}): run this "
            "again once the TLC publishes the month"
        ) from e


@dataclass(frozen=True, kw_only=True)
class Joined:
    """The log's rides of one (color, month), and those joined to their real ride."""

    logged_rides: int  # every row of the log
    month: pd.DataFrame  # the rows whose ride_id names a ride of the month
    labelled: pd.DataFrame  # those with a real ride: the log's row, the ride's own columns
    warning: str | None = None  # the log's files that could not be read, in one line


REAL = [*IDENTITY, "duration"]  # what the prepared month says of a ride


def join(settings: Settings, color: Color | str, month: str) -> Joined:
    """Join the prediction log with `month`'s prepared rides by ride_id (one line when there
    is nothing to join, or the month's durations are not published)."""
    color = Color(color)
    check_month(month)
    read = logged(settings)
    log = read.table.to_pandas()
    index = ride_index(log["ride_id"], color, month)
    mine = log[index.to_numpy() >= 0].assign(label_row=index[index >= 0].to_numpy())
    if mine.empty:
        raise DurationError(
            f"none of the {len(log)} logged rides is a {color.value} {month} ride (ride_id "
            f"{color.value}-{month}-NNNNNN): replay the month first "
            f"(`duration traffic --month {month}`)"
        )
    labels = _labels(settings, color, month)
    found = mine[mine["label_row"] < len(labels)].reset_index(drop=True)
    real = labels.iloc[found["label_row"].to_numpy()][REAL].reset_index(drop=True)
    labelled = found.drop(columns=REAL[:-1]).join(real)
    return Joined(
        logged_rides=len(log),
        month=mine.reset_index(drop=True),
        labelled=labelled,
        warning=read.warning(),
    )


def _version(name: str, version: str, served: pd.DataFrame, found: pd.DataFrame) -> ServedVersion:
    y, pred = found["duration"].to_numpy(np.float64), found["prediction"].to_numpy(np.float64)
    s = scores(y, pred) if len(found) else {"rmse": math.nan, "mae": math.nan}
    return ServedVersion(
        model_name=name,
        model_version=version,
        arms=",".join(sorted(served["arm"].dropna().unique())),
        served_rides=len(served),
        labelled_rides=len(found),
        labelled_share=len(found) / len(served),
        rmse=s["rmse"],
        mae=s["mae"],
    )


def measure(settings: Settings, color: Color | str, month: str) -> ServedReport:
    """Join the log with `month`'s labelled rides; measure each version that served them."""
    j = join(settings, color, month)
    boroughs = tlc.boroughs(settings)
    out = ServedReport(
        run_id="",
        month=month,
        color=Color(color).value,
        logged_rides=j.logged_rides,
        month_rides=len(j.month),
        warning=j.warning,
    )
    keys = ["model_name", "model_version"]
    by = dict(tuple(j.labelled.groupby(keys, sort=True)))
    for key, served in j.month.groupby(keys, sort=True):
        found = by.get(key, j.labelled.iloc[:0])
        name, version = str(key[0]), str(key[1])
        out.versions.append(_version(name, version, served, found))
        if len(found):
            table = slice_table(found, found["prediction"].to_numpy(), boroughs)
            out.slices.extend(table.assign(model_version=version).to_dict("records"))
    out.versions.sort(key=lambda v: int(v.model_version) if v.model_version.isdigit() else 0)
    return out


def log(r: ServedReport) -> str:
    """Record the report as the one served-monitoring run of (color, month)."""
    import mlflow  # deferred: MLflow takes seconds to import

    key = {"kind": "served", "month": r.month, "color": r.color}
    tags = {
        "model_name": ",".join(sorted({v.model_name for v in r.versions})),
        "model_versions": ",".join(v.model_version for v in r.versions),
    }
    with runs.replace_run(MONITOR_EXPERIMENT, key, f"served-{r.month}", tags) as run:
        values = {"logged_rides": r.logged_rides, "month_rides": r.month_rides}
        for v in r.versions:
            for name in ("served_rides", "labelled_share", "rmse", "mae"):
                values[f"v{v.model_version}_{name}"] = getattr(v, name)
        mlflow.log_metrics({k: float(x) for k, x in values.items() if not math.isnan(x)})
        with tempfile.TemporaryDirectory() as tmp:
            versions = pd.DataFrame([asdict(v) for v in r.versions])
            versions.to_csv(Path(tmp) / "versions.csv", index=False)
            pd.DataFrame(r.slices).to_csv(Path(tmp) / "slices.csv", index=False)
            mlflow.log_artifacts(tmp, "served")
        return str(run.info.run_id)


def monitor(settings: Settings, color: Color | str, month: str) -> ServedReport:
    """Measure what was served of `month` and log the run."""
    r = measure(settings, color, month)
    r.run_id = log(r)
    return r
