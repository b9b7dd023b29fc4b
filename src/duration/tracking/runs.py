"""Runs that always end (FINISHED, FAILED or KILLED, never RUNNING), and the tags that say
where each was made."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from duration.core.schema import ModelKind
from duration.errors import Stopped
from duration.tracking.client import client
from duration.tracking.experiments import experiment_id

if TYPE_CHECKING:
    from duration.data.matrices import Inputs


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
def active_run(**kwargs: Any) -> Iterator[Any]:
    """`mlflow.start_run(**kwargs)` that ends FINISHED, FAILED on an error, or KILLED when
    the work is stopped (Ctrl-C, SIGTERM, a timeout): never left RUNNING."""
    import mlflow  # deferred: MLflow takes seconds to import

    run = mlflow.start_run(**kwargs)
    with ended(lambda status: mlflow.end_run(status=status)):
        yield run


@contextmanager
def replace_run(
    experiment: str, key: Mapping[str, str], run_name: str, tags: Mapping[str, str]
) -> Iterator[Any]:
    """The one run of `key` (tags, such as a version and a month) in `experiment`: a new run,
    tagged with `key`, `tags` and the process's tags; once it ends FINISHED, the runs logged
    before for the same key are deleted (a failed one leaves them as they were)."""
    exp = experiment_id(experiment)
    where = " and ".join(f"tags.{k} = '{v}'" for k, v in key.items())
    earlier = client().search_runs([exp], where)
    with active_run(
        experiment_id=exp, run_name=run_name, tags={**key, **tags, **process_tags()}
    ) as run:
        yield run
    for old in earlier:
        client().delete_run(old.info.run_id)


def resume_run(run_id: str) -> None:
    """`mlflow.start_run(run_id=...)` whatever experiment the caller made active (a notebook's
    `mlflow.set_experiment`): MLflow refuses to resume a run of another experiment."""
    import mlflow  # deferred: MLflow takes seconds to import
    from mlflow.tracking import fluent

    saved = fluent._active_experiment_id
    fluent._active_experiment_id = None
    try:
        mlflow.start_run(run_id=run_id)
    finally:
        fluent._active_experiment_id = saved


ORCHESTRATOR_RUN_ENV = "DURATION_ORCHESTRATOR_RUN_ID"  # set in the orchestrator's runs


def process_tags() -> dict[str, str]:
    """Where a run was made: host and pid, so a run left behind can be traced to its process
    (and the MLflow Projects run, or the orchestrator's run, that started it, if any)."""
    tags = {"host": socket.gethostname(), "pid": str(os.getpid()), "git_commit": git_commit()}
    if project_run := os.environ.get("DURATION_PROJECT_RUN_ID"):
        tags["project_run_id"] = project_run  # the `mlflow run` that started this command
    if orchestrator_run := os.environ.get(ORCHESTRATOR_RUN_ENV):
        tags["orchestrator_run_id"] = orchestrator_run
    return tags


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


@functools.cache
def git_commit() -> str:
    """The git commit of the working tree ('unknown' outside a checkout), read once."""
    repo = Path(__file__).resolve().parents[3]
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
