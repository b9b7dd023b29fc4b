"""Shared fixtures: the TLC mirror, a data folder, and real MLflow servers and PostgreSQL on
free ports, all started by the project's own code."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from duration.infra.net import free_port
from duration.infra.proc import stop_group
from duration.server import postgres, tracking_server
from duration.settings import Paths, Postgres, Settings
from tests.helpers import ROOT, pg_home, use_tracking

# A test that uses one of these fixtures (directly or through another) gets the marker, so
# `pytest -m "not server and not mirror"` is the fast loop: no real data, no server.
MARKERS = {
    "mlflow_server": "server",
    "postgres_cluster": "server",
    "pg_server": "server",
    "backend": "server",
    "mirror_url": "mirror",
}


def pytest_configure(config: pytest.Config) -> None:
    """This process talks to MLflow as the CLI does (short retries, no telemetry)."""
    from duration.tracking.client import configure

    configure()


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
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
def mirror_path(mirror_url: str) -> Path:
    return Path(urlparse(mirror_url).path)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for the session, so each real month is prepared once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def mlflow_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session server's folder: its SQLite store `mlflow.db`, artifacts and state."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(scope="session")
def mlflow_server(mlflow_root: Path) -> Iterator[str]:
    """A real lean `mlflow server` (SQLite + artifact folder in a temp dir) on a free port;
    this process tracks to it for the session."""
    with tracking_server.temporary(mlflow_root) as uri:
        old = use_tracking(uri)
        yield uri
        use_tracking(old)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[tuple[Settings, postgres.DbState]]:
    """A real PostgreSQL (`duration db start`) on a free port, in a home of its own."""
    with pg_home() as home:
        s = Settings(paths=Paths(home=home), postgres=Postgres(port=free_port()))
        state = postgres.start(s)
        yield s, state
        postgres.stop(s)


@pytest.fixture(scope="session")
def pg_server(postgres_cluster: tuple[Settings, postgres.DbState]) -> Iterator[str]:
    """A real `mlflow server` on the PostgreSQL store, on a free port."""
    s, state = postgres_cluster
    server = tracking_server.Server(
        store=state.uri, artifacts=s.paths.artifacts, state=s.paths.state, port=free_port()
    )
    proc = tracking_server.start(server, s)
    yield server.url
    stop_group(proc.pid)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The test runs once against a SQLite-backed and once against a PostgreSQL-backed
    server; MLflow in this process points at it for the test."""
    uri = request.getfixturevalue("mlflow_server" if request.param == "sqlite" else "pg_server")
    old = use_tracking(uri)
    yield uri
    use_tracking(old)


@pytest.fixture(scope="session")
def settings(mirror_url: str, data_dir: Path) -> Settings:
    """Settings that read the mirror into the session's data folder."""
    return Settings(paths=Paths(data_dir=data_dir, tlc_url=mirror_url))
