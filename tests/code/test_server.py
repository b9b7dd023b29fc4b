"""The local tracking server's life through the real CLI: start, answer, stop, all under
DURATION_HOME."""

from __future__ import annotations

import pytest

from duration import server
from tests.conftest import assert_one_line_error, free_port, invoke, run_cli

pytestmark = pytest.mark.server


def _alive(pid: int) -> bool:
    """A process of the group still runs (a zombie that no parent reaped does not)."""
    return server.group_alive(pid)


def test_start_answers_under_home_and_stop_ends_the_process_group(tmp_path):
    """A new user's first server: it starts under DURATION_HOME, `register` before any
    search says what to run first, a second start reuses it, and stop ends its workers."""
    from mlflow.tracking import MlflowClient

    port = free_port()
    env = {"DURATION_HOME": str(tmp_path), "MLFLOW_PORT": str(port), "MLFLOW_TRACKING_URI": None}
    uri = f"http://127.0.0.1:{port}"
    started = run_cli("server", "start", env=env, timeout=180)
    try:
        assert started.returncode == 0, started.stderr
        assert server.is_healthy(uri)
        pid = int((tmp_path / ".mlflow" / "server.pid").read_text())
        assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlartifacts").is_dir()
        assert f"{uri}/#/experiments/" not in started.stdout  # no experiment yet: no dead link
        assert f"{uri}/#/models/nyc-taxi-duration" in started.stdout
        early = invoke("register", env=env)  # before any search
        assert_one_line_error(early, "no hyperparameter search", "duration tune")
        assert MlflowClient(uri).search_registered_models() == []
        again = run_cli("server", "start", env=env)  # already answering: nothing new starts
        assert (
            again.returncode == 0 and int((tmp_path / ".mlflow" / "server.pid").read_text()) == pid
        )
    finally:
        stopped = run_cli("server", "stop", env=env)
    assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped"
    assert not server.is_healthy(uri) and not _alive(pid)  # workers included
    assert not (tmp_path / ".mlflow" / "server.pid").exists()
    assert run_cli("server", "stop", env=env).stdout.strip() == "no background server was running"


def test_a_postgres_programs_reason_is_its_fatal_line_and_the_cause_before_it():
    from duration import db

    log = (
        '2026-11-30 10:00:00.1 UTC [12] LOG:  invalid value for parameter "shared_buffers"\n'
        "2026-11-30 10:00:00.1 UTC [12] FATAL:  configuration file contains errors\n"
        "2026-11-30 10:00:00.2 UTC [12] LOG:  database system is shut down\n"
    )
    assert db.reason(log) == (
        'LOG: invalid value for parameter "shared_buffers" / '
        "FATAL: configuration file contains errors"
    )
    initdb = 'initdb: error: directory "/x" exists but is not empty\ninitdb: hint: remove it\n'
    assert db.reason(initdb) == 'initdb: error: directory "/x" exists but is not empty'
    assert db.reason("pg_ctl: could not start server\nExamine the log output.\n") == (
        "pg_ctl: could not start server Examine the log output."
    )
    assert db.reason("") == "no output"
