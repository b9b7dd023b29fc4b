"""Serve a registered version over HTTP: scoring workers behind the nginx proxy.

Each version runs as its own group of uvicorn workers (`serve.workers`, default one per
core) on a free loopback port: MLflow's scoring app, behind the front of
`duration.infra.scoring_app`, which records every served ride in the prediction log. The
version's artifacts are downloaded once, beside the serving state; each worker loads them
from there. `switch` points the proxy at a version and stops the old one once the proxy
has drained it (a graceful stop flushes its log). What serves is recorded in `serve.json`
under `paths.serve_state`, written atomically after every switch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from duration.errors import DurationError
from duration.infra import prediction_log, proxy
from duration.infra.files import write_atomic
from duration.infra.net import LOOPBACK, free_port, is_healthy
from duration.infra.proc import alive, stop_group
from duration.settings import Settings


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


@dataclass(frozen=True, kw_only=True)
class State:
    """What is serving: written atomically to serve.json after every switch."""

    name: str
    version: str
    url: str
    backend_port: int
    backend_pid: int
    server_pid: int
    proxy_pid: int
    started_at: str

    @property
    def backend(self) -> Backend:
        return Backend(
            version=self.version, port=self.backend_port, pid=self.backend_pid,
            server_pid=self.server_pid,
        )  # fmt: skip


def state_file(settings: Settings) -> Path:
    return settings.paths.serve_state / "serve.json"


def read_state(settings: Settings) -> State | None:
    """The recorded state, or None when nothing was started (or the file is unreadable)."""
    try:
        return State(**json.loads(state_file(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_state(settings: Settings, state: State) -> None:
    write_atomic(state_file(settings), json.dumps(asdict(state), indent=2) + "\n")


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
                f"version {version} of {name} did not start serving ({proxy.tail(log_path)}); "
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


def switch(settings: Settings, name: str, backend: Backend) -> State:
    """Point the proxy at `backend` (starting the proxy if needed); stop the old backend."""
    old = read_state(settings)
    proxy.write_conf(settings, name, backend.version, backend.port)
    master = proxy.pid(settings)
    if master is None:
        master = proxy.start(settings)
    else:
        proxy.reload(settings, master)
    state = State(
        name=name,
        version=backend.version,
        url=settings.serve.url,
        backend_port=backend.port,
        backend_pid=backend.pid,
        server_pid=backend.server_pid,
        proxy_pid=master,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_state(settings, state)
    if old is not None and old.backend_pid != backend.pid:
        stop_backend(old.backend)
    return state


@contextmanager
def started(settings: Settings, name: str, version: str) -> Iterator[Backend]:
    """Start `version` beside whatever serves; if the block fails before it is the one
    serving, stop it (the old version goes on serving)."""
    proxy.check_port(settings)
    backend = start_backend(settings, name, version)
    try:
        yield backend
    except BaseException:
        serving = read_state(settings)
        if serving is None or serving.backend_pid != backend.pid:
            stop_backend(backend)
        raise


def status(settings: Settings) -> dict:
    """What serves, asked of the processes themselves (stale pid files are cleaned), with
    the workers that answer and what the prediction log holds."""
    state = read_state(settings)
    master = proxy.pid(settings)
    out: dict = {"url": settings.serve.url, "model_name": None, "version": None, "pid": None,
                 "workers": [], "proxy_pid": master, "healthy": False,
                 "started_at": None}  # fmt: skip
    if state is None:
        out["problem"] = "nothing is serving: run `duration serve start` or `duration deploy`"
        return out
    backend_up = up(state.backend)
    out.update(
        model_name=state.name,
        version=state.version,
        pid=state.server_pid,
        workers=workers(state.backend) if backend_up else [],
        started_at=state.started_at,
        healthy=bool(master and backend_up and is_healthy(settings.serve.url)),
    )
    if not out["healthy"]:
        what = "the proxy is down" if master is None else f"version {state.version} is down"
        out["problem"] = f"{what}: `duration serve start` or `duration deploy` restores it"
    out["logging"] = log_status(settings)
    if "problem" in out["logging"] and "problem" not in out:
        out["problem"] = out["logging"]["problem"]
    return out


def log_status(settings: Settings) -> dict:
    """The prediction log, as the live workers count it (`enabled`: false when off)."""
    if not settings.serve.log:
        return {"enabled": False, "folder": str(settings.paths.serve_log)}
    counts = prediction_log.status(
        settings.paths.serve_state / "workers", lambda pid: alive(pid, "")
    )
    return {"enabled": True, "folder": str(settings.paths.serve_log),
            "flush_s": settings.serve.flush_s, **counts}  # fmt: skip


def running(settings: Settings) -> bool:
    """True when a proxy runs for this home with a recorded version behind it."""
    return read_state(settings) is not None and proxy.pid(settings) is not None


def stop(settings: Settings) -> list[str]:
    """Stop the proxy and the serving backend; return what was stopped."""
    stopped = ["proxy"] if proxy.stop(settings) else []
    state = read_state(settings)
    if state is not None:
        if alive(state.backend_pid, "scoring_app"):
            stopped.append(f"version {state.version}")
        stop_backend(state.backend)
        state_file(settings).unlink(missing_ok=True)
    return stopped
