"""The MLflow client: which server it talks to, and how patiently."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# MLflow's client retries a request 7 times over minutes by default; a dead server should
# stop the work in seconds. MLflow's usage telemetry is off: offline, its thread gives up and
# deletes an environment variable while a request reads the environment, and that request
# fails with KeyError '_MLFLOW_TELEMETRY_SESSION_ID' (seen here on a monitoring run). The
# environment still wins (`configure`).
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def configure() -> None:
    """Set this process's MLflow client variables where the environment has none."""
    for key, value in CLIENT_ENV.items():
        os.environ.setdefault(key, value)


def use(uri: str) -> str:
    """Point this process's MLflow client at the server `uri`."""
    import mlflow  # deferred: MLflow takes seconds to import

    mlflow.set_tracking_uri(uri)
    return uri


def client(uri: str | None = None) -> MlflowClient:
    """An MLflow client for `uri` (default: the current tracking URI)."""
    from mlflow.tracking import MlflowClient  # deferred: MLflow takes seconds to import

    return MlflowClient(uri)


# What the server says when two clients insert the same new row at once (SQLite, PostgreSQL).
_DUPLICATE = ("UNIQUE constraint failed", "duplicate key value", "IntegrityError")


def lost_insert(e: Exception) -> bool:
    """True when `e` is the server refusing a row another client inserted at the same time."""
    return any(s in str(e) for s in _DUPLICATE)
