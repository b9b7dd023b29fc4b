"""Shared fixtures: the TLC mirror, a data folder, and a real MLflow server on a free port."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest

from duration import server
from duration.config import Settings
from duration.serve import free_port

ROOT = Path(__file__).resolve().parents[1]


# A test that uses one of these fixtures (directly or through another) gets the marker, so
# `pytest -m "not server and not mirror"` is the fast loop: no real data, no server.
MARKERS = {
    "mlflow_server": "server",
    "postgres": "server",
    "pg_server": "server",
    "backend": "server",
    "mirror_url": "mirror",
}


def pytest_configure(config):
    """This process talks to MLflow as the CLI does (short retries, no telemetry)."""
    from duration.config import MLFLOW_CLIENT_ENV

    for key, value in MLFLOW_CLIENT_ENV.items():
        os.environ.setdefault(key, value)


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, marker in MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, marker))


def _mirror() -> tuple[str | None, str]:
    url = os.environ.get("DURATION_TLC_URL", "")
    if url.startswith("file://"):
        path = Path(urlparse(url).path)
        where = f"DURATION_TLC_URL={url}"
    else:
        path = (ROOT.parent / "shared" / "data" / "tlc").resolve()
        where = f"{path} (DURATION_TLC_URL is not a file:// address)"
    if (path / "trip-data").is_dir():
        return f"file://{path}", ""
    return None, f"the offline TLC mirror is not at {where}"


@pytest.fixture(scope="session")
def mirror_url() -> str:
    """file:// address of the TLC mirror; skips (or fails under CI) where it is absent."""
    url, why = _mirror()
    if url is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}; CI must have it (see .ci/run)")
        pytest.skip(f"{why}; point DURATION_TLC_URL at file://<path>/shared/data/tlc to run this")
    return url


@pytest.fixture(scope="session")
def mirror_path(mirror_url) -> Path:
    return Path(urlparse(mirror_url).path)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One data folder for the session, so each real month is prepared once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def mlflow_root(tmp_path_factory) -> Path:
    """The session server's folder: its SQLite store `mlflow.db`, artifacts and state."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(scope="session")
def mlflow_server(mlflow_root):
    """A real `mlflow server` (SQLite + artifact folder in a temp dir) on a free port; this
    process tracks to it for the session."""
    root = mlflow_root
    port = free_port()
    proc = server.start_server(root / "mlflow.db", root / "mlartifacts", port, root / "state")
    uri = f"http://127.0.0.1:{port}"
    old = use_tracking(uri)
    yield uri
    use_tracking(old)
    server.stop_pid(proc.pid)


def use_tracking(uri: str | None) -> str | None:
    """Point this process (env and MLflow) at `uri`; return the previous env value."""
    import mlflow

    old = os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)  # None: back to MLflow's default
    return old


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL (`duration db start`) on a free port, in a home of its own."""
    from duration import db

    with pg_home() as home:
        s = Settings(home=home, pg_port=free_port())
        state = db.start(s)
        yield s, state
        db.stop(s)


@contextmanager
def pg_home(prefix: str = "duration-pg-") -> Iterator[Path]:
    """A home for a PostgreSQL cluster, removed afterwards. As root the cluster runs as the
    unprivileged user, so the home is made enterable (pytest's are 0700)."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(home, 0o711)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(postgres):
    """A real `mlflow server` on the PostgreSQL store, on a free port."""
    s, state = postgres
    port = free_port()
    proc = server.start_server(
        state.uri, s.home / "mlartifacts", port, s.home / ".mlflow", settings=s
    )
    yield f"http://127.0.0.1:{port}"
    server.stop_pid(proc.pid)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    """The test runs once against a SQLite-backed and once against a PostgreSQL-backed
    server; MLflow in this process points at it for the test."""
    uri = request.getfixturevalue("mlflow_server" if request.param == "sqlite" else "pg_server")
    old = use_tracking(uri)
    yield uri
    use_tracking(old)


@pytest.fixture(scope="session")
def settings(mirror_url, data_dir) -> Settings:
    """Settings that read the mirror into the session's data folder."""
    return Settings(data_dir=data_dir, tlc_url=mirror_url)


def run_cli(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout=600, preexec_fn=None
):
    """Run the real `duration` console script; return the CompletedProcess.

    `env` is added to this process's environment; a variable set to None is removed.
    `preexec_fn` runs in the child before it starts (to set a resource limit).
    """
    exe = Path(sys.executable).with_name("duration")
    merged = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        env={k: v for k, v in merged.items() if v is not None},
        cwd=cwd,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


def invoke(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the `duration` CLI's `main` in this process, where its imports are already warm
    (a new process spends 3-7 s importing MLflow and the ML stack).

    Same code as the console script: the exit code, stdout and stderr (MLflow's log lines
    included) come back as from `run_cli`. `env` is applied for the call only. Use `run_cli`
    where the process itself matters: signals, or Python warnings on stderr.
    """
    import contextlib
    import io
    import signal

    import mlflow

    from duration.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_uri = dict(os.environ), mlflow.get_tracking_uri()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for key, value in (env or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        mlflow.set_tracking_uri(saved_uri)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return subprocess.CompletedProcess(["duration", *args], rc, out.getvalue(), err.getvalue())


def assert_one_line_error(proc, *needles: str) -> None:
    """A failed command printed one clear line on stderr, no traceback, naming `needles`."""
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
