"""An MLflow tracking server's life: prepare its store once (create, or back up and
upgrade), start it lean on 127.0.0.1, check it answers, stop its whole process group.

`ensure` is the project's local server (under `paths.home`); `temporary` is a throwaway one
on a free port, for tests, scripts and benchmarks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from duration.errors import DurationError, cause, redact
from duration.infra.files import atomic_path, exclusive, utc_stamp
from duration.infra.net import CERT_ENV, LOOPBACK, free_port, health_problem, is_healthy
from duration.infra.proc import stop_group
from duration.server import pg_databases, postgres
from duration.settings import Settings

# One uvicorn worker and no job runner: the MLflow 3 default starts ~16 processes.
LEAN_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    # the registry's webhooks reach the deployer here: http, loopback, seconds after creation
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_CACHE_TTL": "5",
}


@dataclass(frozen=True, kw_only=True)
class Server:
    """Where a tracking server keeps its runs and files, and where it listens."""

    store: str  # a backend store URI: sqlite:///PATH or postgresql://...
    artifacts: Path
    state: Path  # its pid, log and store files, and the store's backups
    port: int
    workers: int = 1  # the lean server the product runs; the load test asks for more
    app: str | None = None  # an `mlflow.app` entry point: the team server's "duration-team"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def sqlite_store(path: Path) -> str:
    """The store URI of a SQLite file."""
    return f"sqlite:///{path.resolve()}"


def local(settings: Settings) -> Server:
    """The project's own local server: MLFLOW_BACKEND_STORE_URI, else SQLite in home."""
    p = settings.paths
    return Server(
        store=settings.tracking.store_uri or sqlite_store(p.server_db),
        artifacts=p.artifacts,
        state=p.state,
        port=settings.tracking.port,
    )


def store_env(settings: Settings, uri: str) -> dict[str, str]:
    """The environment for a process that opens `uri`: the local PostgreSQL's pgpass file
    (libpq's PGPASSFILE) when the URI has no password and none is set."""
    env = dict(os.environ)
    pgpass = postgres.local_pgpass(settings) if uri.startswith("postgresql") else None
    if pgpass is not None and "PGPASSFILE" not in env:
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


@dataclass(frozen=True, kw_only=True)
class StoreInfo:
    """A store's MLflow schema: made just now, its revision, and this MLflow's head."""

    created: bool
    current: str | None
    head: str


def _store(uri: str, artifacts: Path, env: dict[str, str]) -> StoreInfo:
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
    return StoreInfo(**json.loads(proc.stdout.strip().splitlines()[-1]))


def backup_store(settings: Settings, uri: str, backups: Path) -> Path:
    """Copy the store aside before a schema upgrade: SQLite's online backup, or pg_dump."""
    stamp = utc_stamp()
    if uri.startswith("sqlite:///"):
        src = Path(uri.removeprefix("sqlite:///"))
        dest = backups / f"{src.stem}-{stamp}.db"
        with (
            atomic_path(dest) as tmp,
            contextlib.closing(sqlite3.connect(src)) as a,
            contextlib.closing(sqlite3.connect(tmp)) as b,
        ):
            a.backup(b)
        return dest
    return pg_databases.backup(settings, uri, backups / f"mlflow-{stamp}.dump")


def prepare_store(server: Server, settings: Settings) -> str | None:
    """Create the MLflow schema once; or, when it is older than this MLflow's, back the
    store up (under `state`/backups) and upgrade it. Returns what it did to an existing
    store, or None. Serialised per store, so parallel first use cannot race; a marker under
    `state` skips the check until MLflow's version changes."""
    uri = server.store
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    marker = server.state / f"store-{key}.checked"
    mlflow_version = version("mlflow")
    if marker.exists() and marker.read_text() == mlflow_version:
        return None
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    lock = settings.paths.lock_dir / f"store-{key}.lock"
    with exclusive(lock, 600, f"another process prepares {redact(uri)}"):
        note = _prepare(server, settings)
        server.state.mkdir(parents=True, exist_ok=True)
        marker.write_text(mlflow_version)
    return note


def _prepare(server: Server, settings: Settings) -> str | None:
    uri, env = server.store, store_env(settings, server.store)
    info = _store(uri, server.artifacts, env)
    if info.created or info.current == info.head:
        return None
    saved = backup_store(settings, uri, (server.state / "backups").resolve())
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
        f"from {info.current} to {info.head}"
    )


def command(server: Server) -> list[str]:
    """The `mlflow server` command line, bound to 127.0.0.1. An app's server (the team's)
    takes no proxy headers from uvicorn: a client's address is the connection's, and only
    the TLS front, which proves itself with its key, may say another (`server.auth_app`)."""
    return [
        *(str(Path(sys.executable).with_name("mlflow")), "server"),
        *("--backend-store-uri", server.store),
        *("--artifacts-destination", str(server.artifacts.resolve())),
        *("--host", LOOPBACK, "--port", str(server.port), "--workers", str(server.workers)),
        *(["--app-name", server.app, "--uvicorn-opts", "--no-proxy-headers"] if server.app else []),
    ]


def start(
    server: Server, settings: Settings, timeout: float = 90.0, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start the server in the background (pid, store and log files under its `state`), with
    `env` added to its environment; wait for /health."""
    server.state.mkdir(parents=True, exist_ok=True)
    server.artifacts.mkdir(parents=True, exist_ok=True)
    if note := prepare_store(server, settings):
        print(f"duration: {note}", file=sys.stderr)
    log_path = server.state / "server.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command(server),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**store_env(settings, server.store), **LEAN_ENV, **(env or {})},
            start_new_session=True,
        )
    (server.state / "server.pid").write_text(str(proc.pid))
    (server.state / "server.store").write_text(redact(server.store))
    (server.state / "server.app").write_text(server.app or "")
    deadline = time.monotonic() + timeout
    while not is_healthy(server.url, timeout=1.0):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_group(proc.pid)
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
            raise DurationError(
                f"the MLflow server on port {server.port} did not start "
                f"({' '.join(tail)[:200]}); see {log_path}, or pick another port with MLFLOW_PORT"
            )
        time.sleep(0.25)
    return proc


@contextlib.contextmanager
def temporary(root: Path, settings: Settings | None = None, workers: int = 1) -> Iterator[str]:
    """A throwaway lean server on a free port, its SQLite store and artifacts under `root`;
    yields its URL and stops its whole process group afterwards."""
    server = Server(
        store=sqlite_store(root / "mlflow.db"),
        artifacts=root / "mlartifacts",
        state=root / "state",
        port=free_port(),
        workers=workers,
    )
    proc = start(server, settings or Settings())
    try:
        yield server.url
    finally:
        stop_group(proc.pid)


def stop(settings: Settings) -> bool:
    """Stop the home's background server started by `ensure`; False if none was running."""
    state = settings.paths.state
    pid_file = state / "server.pid"
    if not pid_file.exists():
        return False
    stop_group(int(pid_file.read_text()))
    pid_file.unlink()
    (state / "server.store").unlink(missing_ok=True)
    (state / "server.app").unlink(missing_ok=True)
    return True


def running_app(settings: Settings) -> str | None:
    """The app the home's background server runs ("" for plain MLflow), or None if none."""
    try:
        return (settings.paths.state / "server.app").read_text().strip()
    except OSError:
        return None


def ensure(settings: Settings) -> str:
    """Make sure the tracking server answers; start the local default one if needed."""
    uri = settings.tracking.url
    if not uri.startswith(("http://", "https://")):
        raise DurationError(
            f"MLFLOW_TRACKING_URI={uri!r} is not a server address: this project tracks through "
            "an MLflow server (http://...); unset it to use the local one"
        )
    problem = health_problem(uri)
    if problem is None:
        if settings.tracking.is_local:
            check_store(settings)
        check_credentials(uri)
        return uri
    if problem.startswith("tls:"):
        raise DurationError(tls_refused(uri, problem))
    if not settings.tracking.is_local:
        raise DurationError(
            f"the tracking server at {uri} does not answer: start it, or unset "
            "MLFLOW_TRACKING_URI to use the local one (make mlflow)"
        )
    start(local(settings), settings)
    return uri


def tls_refused(uri: str, problem: str) -> str:
    """One line for a certificate this client does not accept, naming the CA file to use."""
    ca = os.environ.get(CERT_ENV)
    given = f"it does not trust the server's with {CERT_ENV}={ca}" if ca else f"{CERT_ENV} is unset"
    return (
        f"the certificate of {uri} was refused ({problem.removeprefix('tls: ')}), and {given}: "
        f"set {CERT_ENV} to the team server's CA file (.mlflow/tls/ca.pem on its host), and "
        "use the host name it was issued for"
    )


def check_credentials(uri: str) -> None:
    """One line when the server wants credentials this client lacks (401), before any work."""
    import requests  # deferred: only commands that talk to a server need it

    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    auth = (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user else None
    verify: str | bool = os.environ.get(CERT_ENV) or True
    try:
        r = requests.get(
            f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=auth,
            verify=verify,
            timeout=10,
        )
    except requests.RequestException:
        return  # it answered /health: a slow search is for the command to meet
    if r.status_code == 401:
        who = f"as {user!r}, the password was refused" if user else "no credentials were given"
        raise DurationError(
            f"the tracking server at {uri} wants a user ({who}): set MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD (an admin makes users: `duration users add NAME`)"
        )


def check_store(settings: Settings) -> None:
    """The local server that answers must run on the store these settings ask for: one line
    when it runs on another (work would silently land in the wrong database)."""
    try:
        running = (settings.paths.state / "server.store").read_text().strip()
    except OSError:
        return
    wanted = redact(local(settings).store)
    if running != wanted:
        raise DurationError(
            f"the local server at {settings.tracking.local_uri} runs on {running}, not on "
            f"{wanted} (MLFLOW_BACKEND_STORE_URI): stop it with `duration server stop`, or "
            "pick another MLFLOW_PORT"
        )


# What the local server's log says when it fails a request, and the line a client gets.
_FAILURES = (
    (
        re.compile(r"No space left on device|Errno 28"),
        "no space left on device on the tracking server's artifact store ({artifacts}): free "
        "space there, then `duration runs reap` ends the runs this left RUNNING",
    ),
    (
        re.compile(
            r"OperationalError|could not connect to server|connection refused|"
            r"server closed the connection",
            re.IGNORECASE,
        ),
        "the tracking server cannot reach its database ({store}): start it (`duration db "
        "start` for the local PostgreSQL), then `duration runs reap`",
    ),
)
RECENT_S = 300.0  # a log line older than this explains nothing about the request just failed


def failure_reason(settings: Settings, now: float | None = None) -> str | None:
    """Why the home's local server failed requests just now, from the tail of its log (None
    when it says nothing recent that this project knows how to word)."""
    log = settings.paths.state / "server.log"
    try:
        st = log.stat()
        if (now or time.time()) - st.st_mtime > RECENT_S:
            return None
        with open(log, "rb") as f:
            f.seek(max(0, st.st_size - 65536))
            lines = f.read().decode(errors="replace").splitlines()[-400:]
    except OSError:
        return None
    server = local(settings)
    for line in reversed(lines):
        for pattern, words in _FAILURES:
            if pattern.search(line):
                return words.format(
                    artifacts=server.artifacts.resolve(), store=redact(server.store)
                )
    return None
