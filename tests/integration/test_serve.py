"""Serving and deployment against a real tracking server, real scoring workers (uvicorn,
MLflow's scoring app behind the project's front), a real nginx proxy and real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient

from duration.errors import DurationError
from duration.infra.net import is_healthy, port_in_use
from duration.ops import converge, deploy
from duration.registry import uris
from duration.serving import service
from duration.serving.state import read_state
from duration.settings import Settings
from duration.tracking.names import DEPLOY_EXPERIMENT
from tests.helpers import assert_one_line_error, invoke, run_cli, scoring_workers
from tests.integration.serving import env, expected, payload, rides

# Under pytest-xdist (`make test`: -n 2 --dist loadgroup) this module runs on one worker,
# so its session fixture (the two trained runs it serves) is built once.
pytestmark = pytest.mark.xdist_group("serve")


class Client(threading.Thread):
    """Sends the same rides over a new connection each time, until stopped."""

    def __init__(self, url: str, body: dict):
        super().__init__(daemon=True)
        self.url, self.body = url, body
        self.answers: list[tuple[str, list]] = []
        self.failures: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                r = requests.post(f"{self.url}/invocations", json=self.body, timeout=30)
                if r.status_code == 200:
                    self.answers.append((r.headers["X-Model-Version"], r.json()["predictions"]))
                else:
                    self.failures.append(f"HTTP {r.status_code}: {r.text[:100]}")
            except requests.RequestException as e:
                self.failures.append(str(e)[:100])
            self.halt.wait(0.05)  # about 15 requests a second: leave the CPU to the deploy


def test_deploy_and_rollback_lose_no_request(home, name):
    records = rides(home)
    v1, v2 = expected(name, "1", records), expected(name, "2", records)
    assert np.abs(v1 - v2).max() > 0.1  # the two versions answer differently
    assert converge.follow(home, name) == []  # nothing serves: nothing to deploy
    deploy.start(home, name)
    client = Client(home.serve.url, payload(records))
    client.start()
    try:
        time.sleep(1)
        # a promotion moves the production alias to v2; serving follows it (no deployer
        # runs here: this process converges, as the pipeline does after its promote)
        uris.set_production(name, "2")
        (step,) = converge.follow(home, name)
        forward = asdict(step.deployment)
        after_forward = len(client.answers)
        time.sleep(1)
        summary = home.paths.home / "d.json"
        back = invoke(
            "deploy", "--name", name, "--version", "1", "--summary", str(summary), env=env(home)
        )
        assert back.returncode == 0, back.stderr
        after_back = len(client.answers)
        time.sleep(1)
    finally:
        client.halt.set()
        client.join()
    assert client.failures == []
    seen = [version for version, _ in client.answers]
    assert seen[0] == "1" and "2" in seen and seen[-1] == "1"
    for version, preds in client.answers:
        assert np.abs(np.asarray(preds) - {"1": v1, "2": v2}[version]).max() <= 1e-4
    # once a deploy has returned, every answer comes from its version (during the switch
    # the old proxy worker may finish a few requests of its own)
    assert set(seen[after_forward:after_back]) >= {"2"} and seen[after_forward] == "2"
    assert set(seen[after_back:]) == {"1"} and len(seen) > after_back
    assert forward["outcome"] == "deployed" and forward["previous_version"] == "1"
    assert forward["smoke"]["max_abs_diff"] <= 1e-4 and forward["smoke"]["rows"] == 200
    (rolled,) = [s["deployment"] for s in json.loads(summary.read_text())["steps"]]
    assert rolled["outcome"] == "rolled-back" and rolled["previous_version"] == "2"
    assert rolled["run_id"] and forward["run_id"]
    assert "rolled-back" in back.stdout and "version 1" in back.stdout
    model = MlflowClient().get_registered_model(name)
    assert model.aliases["production"] == "1"
    assert MlflowClient().get_model_version(name, "2").current_stage == "Archived"
    assert "deployed_at" in MlflowClient().get_model_version(name, "1").tags
    runs = mlflow.search_runs(
        experiment_names=[DEPLOY_EXPERIMENT], filter_string=f"tags.model_name = '{name}'"
    )
    assert sorted(runs["tags.outcome"]) == ["deployed", "rolled-back"]
    assert set(runs["status"]) == {"FINISHED"}
    assert (runs["metrics.switch_s"] > 0).all() and (runs["metrics.start_s"] > 0).all()
    assert deploy.deploy(home, name).outcome == "already-serving"


def _broken_version(name: str, tmp: Path) -> str:
    """Register a copy of v2 whose estimator file is garbage."""
    path = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/2", dst_path=str(tmp)))
    for f in path.rglob("estimator.*"):
        f.write_bytes(b"not a model")
    client = MlflowClient()  # no mlflow.set_experiment: other tests' runs stay where they go
    exp = client.get_experiment_by_name("serve-broken")
    run = client.create_run(exp.experiment_id if exp else client.create_experiment("serve-broken"))
    client.log_artifacts(run.info.run_id, str(path), "model")
    client.set_terminated(run.info.run_id)
    mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    MlflowClient().set_model_version_tag(name, mv.version, "color", "green")
    return mv.version


def test_a_broken_version_is_refused_and_the_old_one_serves(home, name, tmp_path):
    deploy.start(home, name)
    broken = _broken_version(name, tmp_path / "dl")
    proc = invoke("deploy", "--name", name, "--version", broken, env=env(home))
    assert_one_line_error(proc, f"version {broken}", "did not start serving", "not a zip file")
    records = rides(home, 20)
    r = requests.post(f"{home.serve.url}/invocations", json=payload(records), timeout=30)
    assert r.status_code == 200 and r.headers["X-Model-Version"] == "1"
    assert MlflowClient().get_registered_model(name).aliases["production"] == "1"
    runs = mlflow.search_runs(
        experiment_names=[DEPLOY_EXPERIMENT], filter_string=f"tags.model_name = '{name}'"
    )
    assert list(runs["status"]) == ["FAILED"] and list(runs["tags.outcome"]) == ["failed"]
    assert read_state(home).version == "1"
    # answers that differ from the registered version's own predictions fail the smoke test
    with pytest.raises(DurationError, match="differ from its in-process predictions"):
        deploy.smoke_test(home.serve.url, name, "2", records, "2021-03")
    assert not scoring_workers(name, broken)  # the refused version was stopped
    # a malformed request gets a JSON error, not a 500 with a traceback
    for body in (b"garbage", json.dumps({"dataframe_records": [{"PULocationID": 1}]}).encode()):
        r = requests.post(
            f"{home.serve.url}/invocations",
            data=body,
            timeout=30,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 400 and "error_code" in r.json()
        assert "Traceback" not in r.text


def _status(s: Settings) -> tuple[int, dict]:
    proc = run_cli("serve", "status", env=env(s))
    return proc.returncode, json.loads(proc.stdout)


def test_kill_9_is_seen_and_restored(home, name, mirror_path):
    started = invoke("serve", "start", "--name", name, env=env(home))
    assert started.returncode == 0 and "serving" in started.stdout and name in started.stdout
    st = service.status(home)
    assert st.healthy and st.version == "1" and st.model_name == name
    # `make serve` answers raw ride records as the TLC publishes them
    raw = pd.read_parquet(mirror_path / "trip-data" / "green_tripdata_2021-04.parquet").head(3)
    body = {"dataframe_records": json.loads(raw.to_json(orient="records", date_format="iso"))}
    preds = requests.post(f"{home.serve.url}/invocations", json=body, timeout=30).json()
    assert len(preds["predictions"]) == 3 and all(0 < p < 90 for p in preds["predictions"])

    os.kill(st.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while is_healthy(home.serve.url) and time.monotonic() < deadline:
        time.sleep(0.2)
    rc, down = _status(home)
    assert rc == 1 and not down["healthy"] and "version 1 is down" in down["problem"]
    deploy.start(home, name)
    up = service.status(home)
    assert up.healthy and up.pid != st.pid

    assert up.proxy_pid is not None
    os.kill(up.proxy_pid, signal.SIGKILL)  # its worker is orphaned but still listening
    time.sleep(0.5)
    down = service.status(home)
    assert not down.healthy and "the proxy is down" in down.problem
    assert not (home.paths.serve_state / "nginx.pid").exists()  # stale pid file cleaned
    assert invoke("serve", "start", "--name", name, env=env(home)).returncode == 0
    rc, again = _status(home)
    assert rc == 0 and again["healthy"] and again["pid"] == up.pid  # the backend lived on
    stopped = run_cli("serve", "stop", env=env(home))
    assert stopped.returncode == 0 and "proxy" in stopped.stdout
    assert not port_in_use(home.serve.port) and not scoring_workers(name)


def test_a_taken_port_is_refused(home, name):
    with socket.socket() as other:
        other.bind(("127.0.0.1", home.serve.port))
        other.listen()
        proc = invoke("serve", "start", "--name", name, env=env(home))
    assert_one_line_error(proc, f"port {home.serve.port} is taken by another program", "SERVE_PORT")
    assert read_state(home) is None
    assert not list(
        home.paths.serve_state.glob("scoring-*.log")
    )  # refused before starting anything
    assert not scoring_workers(name)


def test_no_production_version(home, name):
    uris.move(name, "1", "Archived")
    MlflowClient().delete_registered_model_alias(name, "production")
    proc = invoke("deploy", "--name", name, env=env(home))
    assert_one_line_error(proc, name, "no Production version")
    with pytest.raises(DurationError, match="no Production version"):
        deploy.start(home, name)
    proc = invoke("deploy", "--name", "no-such-model", env=env(home))
    assert_one_line_error(proc, "no registered model named 'no-such-model'")


def test_an_unknown_version_or_no_smoke_rides_is_one_line(home, name, tmp_path):
    proc = invoke("deploy", "--name", name, "--version", "99", env=env(home))
    assert_one_line_error(proc, f"{name} has no version 99")
    empty = {**env(home), "DURATION_DATA_DIR": str(tmp_path / "empty")}
    proc = invoke("deploy", "--name", name, env=empty)
    assert_one_line_error(proc, "no prepared green month", "duration prepare")
    assert read_state(home) is None and not scoring_workers(name)


def test_a_second_deploy_never_interleaves(home, name):
    with deploy.deploy_lock(home):
        proc = run_cli("deploy", "--name", name, env=env(home))
        assert_one_line_error(proc, "another deploy is running", "--wait")
        proc = run_cli("serve", "stop", env=env(home))
        assert_one_line_error(proc, "another deploy is running")
    assert read_state(home) is None  # the refused deploy started nothing
