"""Serve a registered version over HTTP: MLflow's scoring server behind the nginx proxy.

Each version runs as its own `mlflow models serve` process on a free loopback port;
`switch` points the proxy at it and stops the old one. What serves is recorded in
`serve.json` under `paths.serve_state`, written atomically after every switch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from duration.errors import DurationError
from duration.infra import proxy
from duration.infra.files import write_atomic
from duration.infra.net import LOOPBACK, free_port, is_healthy
from duration.infra.proc import alive, child_with, stop_group
from duration.settings import Settings


@dataclass(frozen=True, kw_only=True)
class Backend:
    """One `mlflow models serve` process for one version."""

    version: str
    port: int
    pid: int  # the process group (the `mlflow models serve` command)
    server_pid: int  # the uvicorn process that answers

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


def start_backend(settings: Settings, name: str, version: str, timeout: float = 180.0) -> Backend:
    """Start `models:/name/version` on a free loopback port; wait until it answers /health."""
    state = settings.paths.serve_state
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = state / f"scoring-v{version}.log"
    bindir = str(Path(sys.executable).parent)  # `mlflow models serve` execs `uvicorn` by name
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.tracking.url,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd = [str(Path(bindir) / "mlflow"), "models", "serve", "-m", f"models:/{name}/{version}"]
    cmd += ["--env-manager", "local", "-h", LOOPBACK, "-p", str(port), "--workers", "1"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://{LOOPBACK}:{port}"
    deadline = time.monotonic() + timeout
    while not is_healthy(url, timeout=1.0):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_group(proc.pid)
            raise DurationError(
                f"version {version} of {name} did not start serving ({proxy.tail(log_path)}); "
                f"see {log_path}"
            )
        time.sleep(0.2)
    return Backend(
        version=version, port=port, pid=proc.pid, server_pid=child_with(proc.pid, "uvicorn")
    )


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
    """What serves, asked of the processes themselves; stale pid files are cleaned."""
    state = read_state(settings)
    master = proxy.pid(settings)
    out = {"url": settings.serve.url, "model_name": None, "version": None, "pid": None,
           "proxy_pid": master, "healthy": False, "started_at": None}  # fmt: skip
    if state is None:
        out["problem"] = "nothing is serving: run `duration serve start` or `duration deploy`"
        return out
    backend_up = alive(state.server_pid, "uvicorn") and is_healthy(state.backend.url)
    out.update(
        model_name=state.name,
        version=state.version,
        pid=state.server_pid,
        started_at=state.started_at,
        healthy=bool(master and backend_up and is_healthy(settings.serve.url)),
    )
    if not out["healthy"]:
        what = "the proxy is down" if master is None else f"version {state.version} is down"
        out["problem"] = f"{what}: `duration serve start` or `duration deploy` restores it"
    return out


def running(settings: Settings) -> bool:
    """True when a proxy runs for this home with a recorded version behind it."""
    return read_state(settings) is not None and proxy.pid(settings) is not None


def stop(settings: Settings) -> list[str]:
    """Stop the proxy and the serving backend; return what was stopped."""
    stopped = ["proxy"] if proxy.stop(settings) else []
    state = read_state(settings)
    if state is not None:
        if alive(state.backend_pid, "mlflow") or alive(state.server_pid, "uvicorn"):
            stopped.append(f"version {state.version}")
        stop_backend(state.backend)
        state_file(settings).unlink(missing_ok=True)
    return stopped
