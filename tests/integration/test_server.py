"""The local tracking server's life through the real CLI: start, answer, stop, all under
DURATION_HOME."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from duration.infra.net import free_port, is_healthy
from duration.infra.proc import group_alive
from tests.helpers import assert_one_line_error, cli_env, full_disk, invoke, run_cli

pytestmark = pytest.mark.server


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
        assert is_healthy(uri)
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
    assert not is_healthy(uri) and not group_alive(pid)  # workers included
    assert not (tmp_path / ".mlflow" / "server.pid").exists()
    assert run_cli("server", "stop", env=env).stdout.strip() == "no background server was running"


def test_a_full_artifact_store_ends_in_one_line_with_the_servers_reason(tmp_path, vectorized):
    """The home's own server, its artifact store a full 3 MB tmpfs: a training run cannot
    log its model, and the command says what the server said, not MLflow's retry error."""
    home = tmp_path / "home"
    env = cli_env(
        vectorized, DURATION_HOME=str(home), MLFLOW_PORT=str(free_port()), MLFLOW_TRACKING_URI=None
    )
    try:
        with full_disk(home / "mlartifacts"):
            proc = run_cli("train", "--model", "linear", "--features", "course", env=env)
            assert_one_line_error(
                proc,
                "no space left on device on the tracking server's artifact store",
                "duration runs reap",
            )
        url = f"http://127.0.0.1:{env['MLFLOW_PORT']}"
        left = [
            r
            for r in MlflowClient(url).search_runs(
                [e.experiment_id for e in MlflowClient(url).search_experiments()]
            )
            if r.info.status == "RUNNING"
        ]
        assert not left  # the run ended (FAILED), nothing for `runs reap` to do
    finally:
        run_cli("server", "stop", env=env)
