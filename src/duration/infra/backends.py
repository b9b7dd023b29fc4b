"""A version's scoring workers: their processes, from download to stop.

Each version runs as its own group of uvicorn workers (`serve.workers`, default one per
core) on a free loopback port: MLflow's scoring app behind the front of
`duration.infra.scoring_app`, which records every served ride in the prediction log. The
version's artifacts are downloaded once, beside the serving state; each worker loads them
from there. A worker killed with -9 is replaced by its supervisor.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from duration.errors import DurationError
from duration.infra.files import tail
from duration.infra.net import LOOPBACK, free_port, is_healthy
from duration.infra.proc import alive, stop_group
from duration.settings import Settings

ROLES = ("production", "canary", "shadow")  # who a group of workers answers as


@dataclass(frozen=True, kw_only=True)
class Backend:
    """One version's scoring workers: a uvicorn supervisor and the workers it restarts."""

    version: str
    port: int
    pid: int  # the process group: the uvicorn supervisor, its workers inside
    server_pid: int  # the process that answers for the group (the supervisor)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def model_dir(settings: Settings, name: str, version: str) -> Path:
    """The local copy of `models:/name/version` its workers load (downloaded once)."""
    return settings.paths.serve_state / "models" / f"{name}-v{version}"


def download(settings: Settings, name: str, version: str) -> Path:
    """`models:/name/version`'s artifacts, downloaded once (atomically: whole or absent)."""
    dest = model_dir(settings, name, version)
    if (dest / "MLmodel").is_file():
        return dest
    import mlflow.artifacts  # deferred: MLflow takes seconds to import

    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    try:
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=str(part),
            tracking_uri=settings.tracking.url,
        )  # fmt: skip
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(part, dest)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return dest


def worker_spec(settings: Settings, name: str, version: str, model: Path, arm: str) -> dict:
    """What each scoring worker is told (`DURATION_SCORING`): its model and its log."""
    s = settings.serve
    return {
        "model": str(model), "name": name, "version": version, "arm": arm,
        "log": str(settings.paths.serve_log) if s.log else None,
        "status": str(settings.paths.serve_state / "workers"),
        "flush_s": s.flush_s, "max_rides": s.max_rides,
    }  # fmt: skip


def uvicorn_command(app: str, port: int, workers: int, factory: bool = True) -> list[str]:
    """The command line of `workers` uvicorn workers of `app` on 127.0.0.1:`port`: uvloop
    and httptools, no access log (the prediction log is the record), and a keep-alive
    longer than nginx's, so the proxy's idle connections are never cut under it."""
    return [sys.executable, "-m", "uvicorn", *(["--factory"] if factory else []), app,
            "--host", LOOPBACK, "--port", str(port), "--workers", str(workers),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning", "--timeout-keep-alive", "75"]  # fmt: skip


def start_backend(
    settings: Settings, name: str, version: str, arm: str = "production", timeout: float = 180.0
) -> Backend:
    """Start `models:/name/version`'s workers on a free loopback port; wait until they
    answer /health. A version that cannot load is one line, from its log."""
    state = settings.paths.serve_state
    state.mkdir(parents=True, exist_ok=True)
    model = download(settings, name, version)
    port = free_port()
    log_path = state / f"scoring-v{version}.log"
    spec = worker_spec(settings, name, version, model, arm)
    env = {**os.environ, "DURATION_SCORING": json.dumps(spec),
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # fmt: skip
    cmd = uvicorn_command("duration.infra.scoring_app:create", port, settings.serve.workers)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://{LOOPBACK}:{port}"
    deadline = time.monotonic() + timeout
    while not is_healthy(url, timeout=1.0):
        # a worker that cannot load is restarted by its supervisor: its log says so first
        if proc.poll() is not None or time.monotonic() > deadline or _failed(log_path):
            stop_group(proc.pid)
            raise DurationError(
                f"version {version} of {name} did not start serving ({tail(log_path)}); "
                f"see {log_path}"
            )
        time.sleep(0.2)
    return Backend(version=version, port=port, pid=proc.pid, server_pid=proc.pid)


def _failed(log: Path) -> bool:
    try:
        return "Traceback (most recent call last)" in log.read_text(errors="replace")
    except OSError:
        return False


def up(backend: Backend) -> bool:
    """True when the backend's supervisor runs and its workers answer (workers orphaned by
    a supervisor killed with -9 still answer, but nothing would restart them)."""
    return alive(backend.server_pid, "scoring_app") and is_healthy(backend.url)


def workers(backend: Backend) -> list[int]:
    """The pids of the workers that answer for `backend` now."""
    with contextlib.suppress(psutil.Error):
        kids = psutil.Process(backend.server_pid).children()
        found = sorted(int(k.pid) for k in kids if "spawn_main" in " ".join(k.cmdline()))
        return found or [backend.server_pid]  # one worker: the supervisor answers itself
    return []


def stop_backend(backend: Backend) -> None:
    """Stop a scoring process: its group holds the uvicorn process it started."""
    stop_group(backend.pid)
