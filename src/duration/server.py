"""The local MLflow tracking server's life: initialise its store once, start it lean, check
it answers, stop its whole process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from duration.config import Settings, redact
from duration.errors import DurationError, cause
from duration.files import atomic_path, exclusive, utc_stamp

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


def store_uri(store: Path | str) -> str:
    """A backend store URI: a Path is a SQLite file."""
    return f"sqlite:///{store.resolve()}" if isinstance(store, Path) else store


def store_env(settings: Settings | None, uri: str) -> dict[str, str]:
    """The environment for a process that opens `uri`: the local PostgreSQL's pgpass file
    (libpq's PGPASSFILE) when the URI has no password and none is set."""
    env = dict(os.environ)
    if settings and uri.startswith("postgresql") and "PGPASSFILE" not in env:
        from duration.db import local_pgpass

        if pgpass := local_pgpass(settings):
            env["PGPASSFILE"] = str(pgpass)
    return env


_STORE = """
import json, logging, os, sys
logging.disable(logging.CRITICAL)
import sqlalchemy
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from importlib.util import find_spec
uri, artifacts = sys.argv[1:3]
engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
with engine.connect() as conn:
    tables = sqlalchemy.inspect(conn).get_table_names()
    current = MigrationContext.configure(conn).get_current_revision()
engine.dispose()
empty = all(t.startswith("alembic_") for t in tables)
if empty:  # a new store: MLflow creates its schema at head
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    SqlAlchemyStore(uri, artifacts)
mlflow_dir = find_spec("mlflow").submodule_search_locations[0]  # without importing mlflow
head = ScriptDirectory(os.path.join(mlflow_dir, "store", "db_migrations")).get_current_head()
print(json.dumps({"created": empty, "current": current, "head": head}))
"""


def _store(uri: str, artifacts: Path, env: dict) -> dict:
    """In a child process (MLflow's store modules are slow to import): create the schema of
    an empty store, and report its revision and this MLflow's head."""
    proc = subprocess.run(
        [sys.executable, "-c", _STORE, uri, str(artifacts.resolve())],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        hint = (
            "; for the local PostgreSQL, start it with `make postgres` (duration db start)"
            if uri.startswith("postgresql")
            else ""
        )
        raise DurationError(
            f"the tracking store {redact(uri)} cannot be opened: {cause(proc.stderr)}{hint}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def backup_store(settings: Settings | None, uri: str, backups: Path) -> Path:
    """Copy the store aside before a schema upgrade: SQLite's online backup, or pg_dump."""
    stamp = utc_stamp()
    if uri.startswith("sqlite:///"):
        import sqlite3

        src = Path(uri.removeprefix("sqlite:///"))
        dest = backups / f"{src.stem}-{stamp}.db"
        with (
            atomic_path(dest) as tmp,
            contextlib.closing(sqlite3.connect(src)) as a,
            contextlib.closing(sqlite3.connect(tmp)) as b,
        ):
            a.backup(b)
        return dest
    from duration import db

    return db.backup(settings or Settings(), uri, backups / f"mlflow-{stamp}.dump")


def prepare_store(
    store: Path | str, artifacts: Path, state: Path, settings: Settings | None = None
) -> str | None:
    """Create the MLflow schema once; or, when it is older than this MLflow's, back the
    store up (under `state`/backups) and upgrade it. Returns what it did to an existing
    store, or None. Serialised per store, so parallel first use cannot race; a marker under
    `state` skips the check until MLflow's version changes."""
    import hashlib
    from importlib.metadata import version

    uri = store_uri(store)
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    marker = state / f"store-{key}.checked"
    mlflow_version = version("mlflow")
    if marker.exists() and marker.read_text() == mlflow_version:
        return None
    env = store_env(settings, uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    lock_dir = settings.lock_dir if settings else Settings().lock_dir
    with exclusive(lock_dir / f"store-{key}.lock", 600, f"another process prepares {redact(uri)}"):
        note = _prepare(uri, artifacts, (state / "backups").resolve(), settings, env)
        state.mkdir(parents=True, exist_ok=True)
        marker.write_text(mlflow_version)
    return note


def _prepare(
    uri: str, artifacts: Path, backups: Path, settings: Settings | None, env: dict
) -> str | None:
    info = _store(uri, artifacts, env)
    if info["created"] or info["current"] == info["head"]:
        return None
    saved = backup_store(settings, uri, backups)
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("mlflow")), "db", "upgrade", uri],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise DurationError(
            f"upgrading the MLflow schema of {redact(uri)} failed ({cause(proc.stderr)}); "
            f"the store as it was is saved at {saved}"
        )
    return (
        f"backed up {redact(uri)} to {saved}, then upgraded its MLflow schema "
        f"from {info['current']} to {info['head']}"
    )


def server_command(
    store: Path | str, artifacts: Path, port: int, host: str = "127.0.0.1", workers: int = 1
) -> list[str]:
    """The `mlflow server` command line for a backend store and an artifact directory (one
    worker: the lean server the product runs; the load test asks for more)."""
    return [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        store_uri(store),
        "--artifacts-destination",
        str(artifacts.resolve()),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def start_server(
    store: Path | str,
    artifacts: Path,
    port: int,
    state: Path,
    timeout: float = 90.0,
    settings: Settings | None = None,
    workers: int = 1,
) -> subprocess.Popen:
    """Start a server in the background (pid, store and log files under `state`); wait for
    /health. `store` is a SQLite file or a backend store URI."""

    state.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    uri = store_uri(store)
    if note := prepare_store(uri, artifacts, state, settings):
        print(f"duration: {note}", file=sys.stderr)
    log = open(state / "server.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        server_command(uri, artifacts, port, workers=workers),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**store_env(settings, uri), **LEAN_ENV},
        start_new_session=True,
    )
    (state / "server.pid").write_text(str(proc.pid))
    (state / "server.store").write_text(redact(uri))
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
    (settings.server_state / "server.store").unlink(missing_ok=True)
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
        if settings.is_local_server:
            check_store(settings)
        return uri
    if not settings.is_local_server:
        raise DurationError(
            f"the tracking server at {uri} does not answer: start it, or unset "
            "MLFLOW_TRACKING_URI to use the local one (make mlflow)"
        )
    start_server(
        settings.store_uri,
        settings.server_artifacts,
        settings.port,
        settings.server_state,
        settings=settings,
    )
    return uri


def check_store(settings: Settings) -> None:
    """The local server that answers must run on the store these settings ask for: one line
    when it runs on another (work would silently land in the wrong database)."""

    try:
        running = (settings.server_state / "server.store").read_text().strip()
    except OSError:
        return
    wanted = redact(settings.store_uri)
    if running != wanted:
        raise DurationError(
            f"the local server at {settings.local_uri} runs on {running}, not on {wanted} "
            "(MLFLOW_BACKEND_STORE_URI): stop it with `duration server stop`, or pick another "
            "MLFLOW_PORT"
        )
