"""Datasets as run inputs: a prepared month's source, digest and schema, never its rows."""

from __future__ import annotations

import hashlib
import time
import warnings
from typing import TYPE_CHECKING, Any

from duration.core.schema import Color, span_months
from duration.data import prepare, tlc
from duration.settings import Settings
from duration.tracking.client import client, lost_insert

if TYPE_CHECKING:
    from duration.data.matrices import Inputs


def dataset(settings: Settings, color: Color | str, month: str) -> Any:
    """An MLflow dataset for a prepared month: source URL, content digest and schema.

    The digest is the SHA-256 of the prepared file, read in chunks; the schema is inferred
    from its first rows. Nothing is held in memory, and MLflow never inspects the data
    value by value (its pandas dataset takes minutes at 3M rides).
    """
    from mlflow.data.dataset_source_registry import resolve_dataset_source  # deferred: MLflow
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    path = prepare.processed_path(settings, color, month)
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    with warnings.catch_warnings():
        # MLflow's hint on integer columns is for model signatures, and a file:// mirror
        # matches two equal local sources: neither is news to the user
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        warnings.filterwarnings("ignore", "The specified dataset source can be", UserWarning)
        return MetaDataset(  # type: ignore[abstract]  # MLflow types it abstract; it is not
            source=resolve_dataset_source(tlc.trip_url(settings, color, month)),
            name=tlc.trip_file(color, month).removesuffix(".parquet"),
            digest=sha.hexdigest()[:16],
            schema=infer_signature(prepare.first_rows(path, 1000)).inputs,
        )


def log_dataset(
    run_id: str, ds: Any, context: str, uri: str | None = None, attempts: int = 3
) -> None:
    """Log a dataset as an input of a run (by id: no active run needed).

    Two runs that log the same new dataset at once (two searches, two pipelines) race on the
    server's insert, and one gets an integrity error; its retry finds the dataset there."""
    from mlflow.entities import DatasetInput, InputTag  # deferred: MLflow
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    tag = InputTag(key=MLFLOW_DATASET_CONTEXT, value=context)
    for attempt in range(1, attempts + 1):
        try:
            client(uri).log_inputs(run_id, [DatasetInput(ds._to_mlflow_entity(), tags=[tag])])
            return
        except MlflowException as e:
            if attempt == attempts or not lost_insert(e):
                raise
            time.sleep(0.2 * attempt)


def log_data(run_id: str, inp: Inputs, uri: str | None = None) -> None:
    """Log the fitted DictVectorizer artifact and the input datasets (digests, no data)."""
    client(uri).log_artifact(run_id, str(inp.stage / "preprocessor.b"), "preprocessor")
    for month in span_months(inp.train):
        log_dataset(run_id, dataset(inp.settings, inp.color, month), "training", uri)
    log_dataset(run_id, dataset(inp.settings, inp.color, inp.val), "validation", uri)
