"""Score a month with a registered (or logged) model and write the predictions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from duration import data, registry, tracking
from duration.config import Color, Settings
from duration.files import atomic_path


@dataclass
class Prediction:
    """The outcome of `predict`."""

    output: str
    rows: int
    rmse: float
    model_name: str
    model_version: str


def predict(
    settings: Settings, model_uri: str, color: Color | str, month: str, output: Path
) -> Prediction:
    """Download and prepare `month`, score it with `model_uri`, write parquet, report RMSE."""
    model = registry.load(model_uri)
    name, version = registry.resolve_version(model_uri)
    rides = data.load_processed(settings, color, data.check_month(month))
    out = rides[data.IDENTITY].copy()
    out["predicted_duration"] = registry.predict_frame(model, rides, color)
    out["duration"] = rides["duration"]
    out["model_name"] = name or model_uri
    out["model_version"] = version
    known = out["duration"].notna()
    rmse = (
        tracking.scores(
            out.loc[known, "duration"].to_numpy(), out.loc[known, "predicted_duration"]
        )["rmse"]
        if known.any()
        else math.nan
    )
    with atomic_path(output) as tmp:
        out.to_parquet(tmp, index=False)
    return Prediction(str(output), len(out), rmse, name, version)
