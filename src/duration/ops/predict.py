"""Score a month with a registered (or logged) model and write the predictions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from duration.core.metrics import rmse
from duration.core.schema import IDENTITY, Color, check_month
from duration.data import prepare
from duration.infra.files import atomic_path
from duration.registry.evaluation import predict_frame
from duration.registry.uris import load, resolve_version
from duration.settings import Settings


@dataclass(frozen=True, kw_only=True)
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
    model = load(model_uri)
    name, version = resolve_version(model_uri)
    rides = prepare.load_processed(settings, color, check_month(month))
    out = rides[IDENTITY].copy()
    out["predicted_duration"] = predict_frame(model, rides, str(Color(color).value))
    out["duration"] = rides["duration"]
    out["model_name"] = name or model_uri
    out["model_version"] = version
    known = out["duration"].notna()
    score = (
        rmse(out.loc[known, "duration"].to_numpy(), out.loc[known, "predicted_duration"])
        if known.any()
        else math.nan
    )
    with atomic_path(output) as tmp:
        out.to_parquet(tmp, index=False)
    return Prediction(
        output=str(output), rows=len(out), rmse=score, model_name=name, model_version=version
    )
