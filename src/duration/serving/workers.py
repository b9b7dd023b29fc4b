"""A version's scoring workers: their processes, from download to stop.

Each version runs as its own group of uvicorn workers (`serve.workers`, default one per
core) on a free loopback port: MLflow's scoring app behind the front of
`duration.serving.app`, which records every served ride in the prediction log. The version's
artifacts are downloaded once, beside the serving state; each worker loads them from there.
A worker killed with -9 is replaced by its supervisor. What a worker is told is one
`WorkerSpec`, passed in the environment (`SPEC_ENV`) and read back by `WorkerSpec.from_env`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from duration.errors import DurationError
from duration.infra.files import tail
from duration.infra.net import LOOPBACK, free_port, is_healthy
from duration.infra.proc import alive, stop_group
from duration.serving import metrics
from duration.serving.state import Role, WorkerGroup
from duration.settings import Settings

SPEC_ENV = "DURATION_SCORING"
APP = "duration.serving.app:create"


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    """What each scoring worker of a group is told: its model, its arm and its log."""

    model: str  # the local copy of the version's artifacts
    name: str
    version: str
    role: Role
    weight: int | None  # a candidate's share of clients (%); None for Production
    log: str | None  # the prediction log's folder; None: not logged
    status: str  # where each worker reports its counters
    flush_s: float
    max_rides: int

    def to_env(self) -> dict[str, str]:
        """The spec as the worker's environment carries it."""
        return {SPEC_ENV: json.dumps(asdict(self))}

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WorkerSpec:
        raw = json.loads(environ[SPEC_ENV])
        return cls(**{**raw, "role": Role(raw["role"])})


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
            artifact_uri=f"models:/{name}/{version}",
            dst_path=str(part),
            tracking_uri=settings.tracking.url,
        )
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(part, dest)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return dest


def spec(
    settings: Settings, name: str, version: str, role: Role, weight: int | None = None
) -> WorkerSpec:
    """The spec of `version`'s workers as `role`, its model downloaded."""
    s = settings.serve
    return WorkerSpec(
        model=str(download(settings, name, version)),
        name=name,
        version=version,
        role=role,
        weight=weight,
        log=str(settings.paths.serve_log) if s.log else None,
        status=str(settings.paths.serve_state / "workers"),
        flush_s=s.flush_s,
        max_rides=s.max_rides,
    )


def uvicorn_command(app: str, port: int, workers: int, factory: bool = True) -> list[str]:
    """The command line of `workers` uvicorn workers of `app` on 127.0.0.1:`port`: uvloop
    and httptools, no access log (the prediction log is the record), and a keep-alive
    longer than nginx's, so the proxy's idle connections are never cut under it."""
    return [
        *(sys.executable, "-m", "uvicorn"),
        *(["--factory"] if factory else []),
        app,
        *("--host", LOOPBACK, "--port", str(port), "--workers", str(workers)),
        *("--loop", "uvloop", "--http", "httptools", "--no-access-log"),
        *("--log-level", "warning", "--timeout-keep-alive", "75"),
    ]


def start_group(settings: Settings, spec: WorkerSpec, timeout: float = 180.0) -> WorkerGroup:
    """Start the workers of `spec` on a free loopback port; wait until they answer /health.
    A version that cannot load is one line, from its log."""
    state = settings.paths.serve_state
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = state / f"scoring-v{spec.version}.log"
    env = {**os.environ, **spec.to_env(), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.pop(metrics.DIR_ENV, None)
    if settings.serve.metrics:
        env[metrics.DIR_ENV] = str(metrics_dir(settings, port, fresh=True))
    cmd = uvicorn_command(APP, port, settings.serve.workers)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    group = WorkerGroup(version=spec.version, port=port, pid=proc.pid, server_pid=proc.pid)
    deadline = time.monotonic() + timeout
    while not is_healthy(group.url, timeout=1.0):
        # a worker that cannot load is restarted by its supervisor: its log says so first
        if proc.poll() is not None or time.monotonic() > deadline or _failed(log_path):
            stop_group(proc.pid)
            raise DurationError(
                f"version {spec.version} of {spec.name} did not start serving "
                f"({tail(log_path)}); see {log_path}"
            )
        time.sleep(0.2)
    return group


def _failed(log: Path) -> bool:
    try:
        return "Traceback (most recent call last)" in log.read_text(errors="replace")
    except OSError:
        return False


def up(group: WorkerGroup) -> bool:
    """True when the group's supervisor runs and its workers answer (workers orphaned by a
    supervisor killed with -9 still answer, but nothing would restart them)."""
    return alive(group.server_pid, "serving.app") and is_healthy(group.url)


def worker_pids(group: WorkerGroup) -> list[int]:
    """The pids of the workers that answer for `group` now."""
    with contextlib.suppress(psutil.Error):
        kids = psutil.Process(group.server_pid).children()
        found = sorted(int(k.pid) for k in kids if "spawn_main" in " ".join(k.cmdline()))
        return found or [group.server_pid]  # one worker: the supervisor answers itself
    return []


def strays(settings: Settings, known: set[int]) -> list[int]:
    """Worker groups of this home that no state names (a deployer stopped while it started
    one, say): their supervisors' pids. A group's spec names its model's folder, which lies
    under this home's serving state."""
    models = str(settings.paths.serve_state.resolve() / "models")
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "environ"]):
        with contextlib.suppress(psutil.Error, ValueError, KeyError, TypeError):
            if APP not in " ".join(p.info["cmdline"] or []) or p.info["pid"] in known:
                continue
            if "spawn_main" in " ".join(p.info["cmdline"]):
                continue  # a worker: its supervisor is the group
            model = json.loads((p.info["environ"] or {})[SPEC_ENV])["model"]
            if str(Path(model).resolve()).startswith(models):
                found.append(int(p.info["pid"]))
    return found


def metrics_dir(settings: Settings, port: int, fresh: bool = False) -> Path:
    """The folder where the group on `port` counts (emptied first when `fresh`)."""
    folder = settings.paths.serve_state / "metrics" / str(port)
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    return folder


def stop(group: WorkerGroup) -> None:
    """Stop a group: its process group holds the uvicorn supervisor and its workers."""
    stop_group(group.pid)


def running(group: WorkerGroup) -> bool:
    """True while the group's supervisor runs (answering or not)."""
    return alive(group.pid, "serving.app")
