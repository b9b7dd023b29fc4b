"""Experiments by name, and links into the MLflow UI's model-training view."""

from __future__ import annotations

from duration.errors import DurationError
from duration.tracking.client import client


def experiment_id(name: str, uri: str | None = None) -> str:
    """The id of the named experiment: created if missing (once, whoever races), restored if
    deleted."""
    from mlflow.exceptions import MlflowException  # deferred: MLflow takes seconds to import

    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        try:
            return str(c.create_experiment(name))
        except MlflowException as e:
            # Another command created it between our look and our create (two searches at once).
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        try:
            c.restore_experiment(exp.experiment_id)
        except MlflowException as e:
            raise DurationError(
                f"experiment {name!r} is deleted and could not be restored ({e.message[:120]}): "
                f"restore it in the MLflow UI, or run `mlflow experiments restore "
                f"--experiment-id {exp.experiment_id}`"
            ) from e
    return str(exp.experiment_id)


def ui_links(uri: str, experiment: str | None = None, model: str | None = None) -> list[str]:
    """Direct links into the MLflow UI's model-training view (not its GenAI start page)."""
    base = uri.rstrip("/")
    links = []
    if experiment is not None:
        exp = client(uri).get_experiment_by_name(experiment)
        if exp is not None:
            links.append(
                f"{base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
            )
    if model is not None:
        links.append(f"{base}/#/models/{model}")
    return links
