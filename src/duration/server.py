"""The local MLflow tracking server's life: initialise its store once, start it lean, check
it answers, stop its whole process group."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from duration.config import Settings
from duration.errors import DurationError

# One uvicorn worker and no job runner: the MLflow 3 default starts ~16 processes.
LEAN_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def is_healthy(uri: str, timeout: float = 2.0) -> bool:
    """True when `uri`/health answers OK."""
    if not uri.startswith(("http://", "https://")):
        return False
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as r:  # noqa: S310
            return r.status == 200
    except (OSError, ValueError):
        return False


def init_db(db: Path, artifacts: Path) -> None:
    """Create the SQLite schema once, under a lock, so parallel first use cannot race."""
    db = db.resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = db.with_name(db.name + ".ready")
        if db.exists() and marker.exists():
            return
        subprocess.run(
            [sys.executable, "-c", _INIT, f"sqlite:///{db}", str(artifacts.resolve())],
            check=True,
            capture_output=True,
            text=True,
        )
        marker.touch()


_INIT = """
import sys, logging
logging.disable(logging.CRITICAL)
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
SqlAlchemyStore(sys.argv[1], sys.argv[2])
"""


def server_command(db: Path, artifacts: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """The `mlflow server` command line for a SQLite store and an artifact directory."""
    return [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        f"sqlite:///{db.resolve()}",
        "--artifacts-destination",
        str(artifacts.resolve()),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def start_server(
    db: Path, artifacts: Path, port: int, state: Path, timeout: float = 90.0
) -> subprocess.Popen:
    """Start a server in the background (pid and log files under `state`); wait for /health."""
    state.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    init_db(db, artifacts)
    log = open(state / "server.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        server_command(db, artifacts, port),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **LEAN_ENV},
        start_new_session=True,
    )
    (state / "server.pid").write_text(str(proc.pid))
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while not is_healthy(uri, timeout=1.0):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_pid(proc.pid)
            tail = (state / "server.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise DurationError(
                f"the MLflow server on port {port} did not start ({' '.join(tail)[:200]}); "
                f"see {state / 'server.log'}, or pick another port with MLFLOW_PORT"
            )
        time.sleep(0.25)
    return proc


def group_alive(pgid: int) -> bool:
    """True while a process of group `pgid` runs (zombies, dead but not yet reaped by a
    parent that is gone or busy, do not count)."""
    import psutil

    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    """Stop a server's process group: SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not group_alive(pid):
                return
            time.sleep(0.1)


def stop_server(settings: Settings) -> bool:
    """Stop the background server started by `ensure_server`; False if none was running."""
    pid_file = settings.server_state / "server.pid"
    if not pid_file.exists():
        return False
    stop_pid(int(pid_file.read_text()))
    pid_file.unlink()
    return True


def ensure_server(settings: Settings) -> str:
    """Make sure the tracking server answers; start the local default one if needed."""
    uri = settings.tracking_uri
    if not uri.startswith(("http://", "https://")):
        raise DurationError(
            f"MLFLOW_TRACKING_URI={uri!r} is not a server address: this project tracks through "
            "an MLflow server (http://...); unset it to use the local one"
        )
    if is_healthy(uri):
        return uri
    if not settings.is_local_server:
        raise DurationError(
            f"the tracking server at {uri} does not answer: start it, or unset "
            "MLFLOW_TRACKING_URI to use the local one (make mlflow)"
        )
    start_server(
        settings.server_db, settings.server_artifacts, settings.port, settings.server_state
    )
    return uri
