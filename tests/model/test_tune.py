"""Hyperparameter search against a real server: nested runs, reproducibility, interrupts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from duration import train, tune
from duration.errors import DurationError


@pytest.fixture(scope="module")
def inputs(vectorized, mlflow_server):
    return train.load_inputs(vectorized, "green", "default", "2021-01", "2021-02")


def children(parent_id: str):
    parent = MlflowClient().get_run(parent_id)
    return MlflowClient().search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        order_by=["attributes.start_time ASC"],
    )


def no_running_runs():
    client = MlflowClient()
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, filter_string="attributes.status = 'RUNNING'") == []


def test_small_search_creates_parent_and_children(inputs):
    r = tune.search(inputs, "xgboost", trials=3, seed=7, max_rounds=8, progress=False)
    assert r.status == "FINISHED" and r.completed == 3
    kids = children(r.parent_run_id)
    assert len(kids) == 3
    for kid in kids:
        p = kid.data.params
        assert p["max_depth"].isdigit() and 4 <= int(p["max_depth"]) <= 12  # typed, not 7.0
        assert 0.08 <= float(p["learning_rate"]) <= 0.4
        assert p["n_estimators"] == "8"
        assert kid.data.metrics["best_iteration"] < 8
        assert kid.info.experiment_id == MlflowClient().get_run(r.parent_run_id).info.experiment_id
    best = [k for k in kids if k.data.tags.get("best_trial") == "true"]
    assert len(best) == 1 and best[0].data.metrics["val_rmse"] == pytest.approx(r.best_val_rmse)
    parent = MlflowClient().get_run(r.parent_run_id)
    assert parent.data.metrics["best_val_rmse"] == pytest.approx(min(r.history))
    assert parent.data.params["trials"] == "3" and parent.data.params["seed"] == "7"
    assert "max_depth" in parent.data.params["search_space"]
    assert parent.data.params["best_max_depth"] == str(r.best_params["max_depth"])
    assert isinstance(r.best_params["max_depth"], int)


def test_same_seed_same_search(inputs):
    a = tune.search(inputs, "xgboost", trials=3, seed=11, max_rounds=10, progress=False)
    b = tune.search(inputs, "xgboost", trials=3, seed=11, max_rounds=10, progress=False)
    assert a.history == pytest.approx(b.history, abs=1e-6)
    assert a.best_params == b.best_params
    pa = [k.data.params for k in children(a.parent_run_id)]
    pb = [k.data.params for k in children(b.parent_run_id)]
    assert pa == pb


def test_random_forest_search(inputs):
    r = tune.search(inputs, "random_forest", trials=1, seed=1, progress=False)
    assert r.completed == 1 and 4 < r.best_val_rmse < 9


def test_timeout_stops_cleanly(inputs):
    r = tune.search(inputs, "xgboost", trials=40, seed=3, timeout=6, progress=False)
    assert r.status == "KILLED" and r.completed < 40
    parent = MlflowClient().get_run(r.parent_run_id)
    assert parent.info.status == "KILLED"
    statuses = [k.info.status for k in children(r.parent_run_id)]
    assert statuses.count("FINISHED") == r.completed
    assert statuses.count("KILLED") == 1  # the in-flight trial
    if r.completed:
        assert parent.data.metrics["best_val_rmse"] == pytest.approx(r.best_val_rmse)
    assert no_running_runs()


def test_ctrl_c_stops_cleanly(vectorized, cli_env, tmp_path):
    summary = tmp_path / "s.json"
    exe = Path(sys.executable).with_name("duration")
    proc = subprocess.Popen(
        [
            str(exe),
            "tune",
            "--trials",
            "40",
            "--seed",
            "5",
            "--max-rounds",
            "30",
            "--summary",
            str(summary),
        ],
        env={**os.environ, **cli_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client, deadline = MlflowClient(), time.monotonic() + 90
    while time.monotonic() < deadline:  # wait until the search has finished one trial
        exps = [e.experiment_id for e in client.search_experiments()]
        parents = client.search_runs(
            exps, "attributes.status = 'RUNNING' and tags.search = 'hyperopt-tpe'"
        )
        if (
            parents
            and len([k for k in children(parents[0].info.run_id) if k.info.status == "FINISHED"])
            >= 1
        ):
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err
    assert proc.returncode == 130, err
    data = json.loads(summary.read_text())
    assert data["status"] == "KILLED" and data["completed"] < 40
    assert "stopped early" in err
    assert no_running_runs()
    assert MlflowClient().get_run(data["parent_run_id"]).info.status == "KILLED"


def test_zero_trials_is_refused(inputs):
    with pytest.raises(DurationError, match="at least 1"):
        tune.search(inputs, "xgboost", trials=0)


def test_the_search_space_is_declared_once():
    sp = tune.space("xgboost")
    assert set(sp) == set(tune.SPACES["xgboost"])
    with pytest.raises(DurationError, match="no search space"):
        tune.space("linear")
    assert mlflow.get_tracking_uri()  # the fixture set it once
