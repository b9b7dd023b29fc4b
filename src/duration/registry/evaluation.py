"""Score a logged or registered model on prepared rides: predictions, RMSE, slices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from duration.core.metrics import rmse, slice_table
from duration.core.model import DurationModel
from duration.core.records import raw_records
from duration.errors import DurationError
from duration.registry.uris import load


def duration_model(model: Any) -> DurationModel | None:
    """The project's own model behind a loaded pyfunc, or None for any other model."""
    from mlflow.exceptions import MlflowException  # deferred: MLflow takes seconds to import

    try:
        impl = model.unwrap_python_model()
    except (MlflowException, AttributeError):
        return None
    return impl if isinstance(impl, DurationModel) else None


def predict_frame(model: Any, rides: pd.DataFrame, color: str) -> np.ndarray:
    """Predict durations for prepared rides, sent to the model as raw TLC records (only the
    columns its signature reads: MLflow warns about each other one)."""
    records = raw_records(rides.drop(columns=["duration", "dropoff_datetime"]), color)
    schema = model.metadata.get_input_schema()
    if schema is not None and schema.has_input_names():
        missing = [c for c in schema.required_input_names() if c not in records.columns]
        if missing:
            raise DurationError(
                f"the input lacks columns the model expects: {missing}; "
                "send raw TLC ride records with those columns"
            )
        names = set(schema.input_names())
        records = records[[c for c in records.columns if c in names]]
    ours = duration_model(model)
    if ours is not None:
        # MLflow checks the optional columns (type Any) value by value: about 1 s per 70k
        # rides. The model normalises its input itself, as it does behind a scoring server.
        return np.asarray(ours.predict(None, records))
    return np.asarray(model.predict(records))


def score(model_uri: str, rides: pd.DataFrame, color: str) -> float:
    """RMSE of a logged or registered model on prepared rides."""
    return rmse(rides["duration"].to_numpy(), predict_frame(load(model_uri), rides, color))


@dataclass(frozen=True, kw_only=True)
class Scored:
    """A model's RMSE on rides, and its RMSE and MAE by slice."""

    rmse: float
    slices: pd.DataFrame


def evaluate(model_uri: str, rides: pd.DataFrame, color: str, boroughs: dict[int, str]) -> Scored:
    """RMSE of a model on prepared rides, overall and by slice (borough, hour, distance)."""
    pred = predict_frame(load(model_uri), rides, color)
    return Scored(
        rmse=rmse(rides["duration"].to_numpy(), pred),
        slices=slice_table(rides, pred, boroughs),
    )
