"""MLflow client helpers: connect, find experiments, tag runs, log datasets, score.

Cheap to import (the CLI connects before loading the ML stack): heavy imports are local.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from duration import server
from duration.config import Color, ModelKind, Settings, span_months
from duration.errors import DurationError, Stopped

if TYPE_CHECKING:
    import numpy as np
    from mlflow.tracking import MlflowClient

    from duration.matrices import Inputs


def connect(settings: Settings) -> str:
    """Ensure the server and point the MLflow client at it (done once, at the CLI entry)."""
    uri = server.ensure_server(settings)  # first: a bad or dead URI fails fast
    import mlflow

    mlflow.set_tracking_uri(uri)
    return uri


@contextmanager
def ended(finish: Callable[[str], None]) -> Iterator[None]:
    """Run the block, then `finish(status)`: FINISHED, FAILED on an error, or KILLED when the
    work is stopped (Ctrl-C, SIGTERM, a timeout). When the block failed, a failure to finish
    (the server gone too) does not hide the block's own; `runs reap` ends the run later."""
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except (KeyboardInterrupt, Stopped):
        status = "KILLED"
        raise
    finally:
        if status == "FINISHED":
            finish(status)
        else:
            with contextlib.suppress(Exception):
                finish(status)


@contextmanager
def active_run(**kwargs) -> Iterator:
    """`mlflow.start_run(**kwargs)` that ends FINISHED, FAILED on an error, or KILLED when
    the work is stopped (Ctrl-C, SIGTERM, a timeout): never left RUNNING."""
    import mlflow

    run = mlflow.start_run(**kwargs)
    with ended(lambda status: mlflow.end_run(status=status)):
        yield run


def resume_run(run_id: str) -> None:
    """`mlflow.start_run(run_id=...)` whatever experiment the caller made active (a notebook's
    `mlflow.set_experiment`): MLflow refuses to resume a run of another experiment."""
    import mlflow
    from mlflow.tracking import fluent

    saved = fluent._active_experiment_id
    fluent._active_experiment_id = None
    try:
        mlflow.start_run(run_id=run_id)
    finally:
        fluent._active_experiment_id = saved


def client(uri: str | None = None) -> MlflowClient:
    """An MLflow client for `uri` (default: the current tracking URI)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def experiment_id(name: str, uri: str | None = None) -> str:
    """The id of the named experiment: created if missing (once, whoever races), restored if
    deleted."""
    from mlflow.exceptions import MlflowException

    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        try:
            return c.create_experiment(name)
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
    return exp.experiment_id


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


def process_tags() -> dict[str, str]:
    """Where a run was made: host and pid, so a run left behind can be traced to its process
    (and the MLflow Projects run that started it, if any)."""
    tags = {"host": socket.gethostname(), "pid": str(os.getpid()), "git_commit": git_commit()}
    if project_run := os.environ.get("DURATION_PROJECT_RUN_ID"):
        tags["project_run_id"] = project_run  # the `mlflow run` that started this command
    return tags


def process_gone(host: str, pid: str, since_ms: int) -> bool:
    """True when the process `pid` that started on this `host` by `since_ms` (epoch ms) no
    longer runs; False for another host's process, which cannot be checked from here."""
    import psutil

    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        started = psutil.Process(int(pid)).create_time()
    except psutil.NoSuchProcess:
        return True
    return started * 1000 > since_ms + 1000  # the pid now belongs to a newer process


def _orphaned(run) -> bool:
    """True when a RUNNING run's process (by its host and pid tags) no longer exists here."""
    tags = run.data.tags
    return process_gone(tags.get("host", ""), tags.get("pid", ""), run.info.start_time)


def reap(uri: str | None = None) -> list[str]:
    """End FAILED every RUNNING run whose process on this host is gone; return their ids.

    A process killed with SIGKILL (or a machine that lost power) cannot end its own runs.
    """
    c, host = client(uri), socket.gethostname()
    exps = [e.experiment_id for e in c.search_experiments()]
    if not exps:
        return []
    runs = c.search_runs(exps, "attributes.status = 'RUNNING'", max_results=5000)
    reaped = [r.info.run_id for r in runs if _orphaned(r)]
    for run_id in reaped:
        c.set_tag(
            run_id, "reaped", f"its process on {host} was gone; ended by `duration runs reap`"
        )
        c.set_terminated(run_id, "FAILED")
    return reaped


def run_tags(inp: Inputs, kind: ModelKind | str | None = None) -> dict[str, str]:
    """Tags every training run carries: color, months, feature set, process (and model)."""
    tags = {
        "color": inp.color.value,
        "train_month": inp.train,
        "val_month": inp.val,
        "feature_set": inp.features.value,
        **process_tags(),
    }
    if kind is not None:
        tags["model"] = ModelKind(kind).value
    return tags


def dataset(settings: Settings, color: Color | str, month: str):
    """An MLflow dataset for a prepared month: source URL, content digest and schema.

    The digest is the SHA-256 of the prepared file, read in chunks; the schema is inferred
    from its first rows. Nothing is held in memory, and MLflow never inspects the data
    value by value (its pandas dataset takes minutes at 3M rides).
    """
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    from duration import data

    path = data.processed_path(settings, color, month)
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    with warnings.catch_warnings():
        # MLflow's hint on integer columns is for model signatures, and a file:// mirror
        # matches two equal local sources: neither is news to the user
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        warnings.filterwarnings("ignore", "The specified dataset source can be", UserWarning)
        return MetaDataset(
            source=resolve_dataset_source(data.trip_url(settings, color, month)),
            name=data.trip_file(color, month).removesuffix(".parquet"),
            digest=sha.hexdigest()[:16],
            schema=infer_signature(data.first_rows(path, 1000)).inputs,
        )


# What the server says when two clients insert the same new row at once (SQLite, PostgreSQL).
_DUPLICATE = ("UNIQUE constraint failed", "duplicate key value", "IntegrityError")


def lost_insert(e: Exception) -> bool:
    """True when `e` is the server refusing a row another client inserted at the same time."""
    return any(s in str(e) for s in _DUPLICATE)


def log_dataset(run_id: str, ds, context: str, uri: str | None = None, attempts: int = 3) -> None:
    """Log a dataset as an input of a run (by id: no active run needed).

    Two runs that log the same new dataset at once (two searches, two pipelines) race on the
    server's insert, and one gets an integrity error; its retry finds the dataset there."""
    from mlflow.entities import DatasetInput, InputTag
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


def scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """RMSE and MAE in minutes."""
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    return {
        "rmse": float(root_mean_squared_error(y, pred)),
        "mae": float(mean_absolute_error(y, pred)),
    }


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The git commit of the working tree ('unknown' outside a checkout), read once."""
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
            cwd=repo,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=repo,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
