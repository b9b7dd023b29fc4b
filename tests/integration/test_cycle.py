"""`duration cycle` against a real server and the mirror: it keeps, promotes and rejects in
constructed cases, never lets the challenger see the gate month, repeats a decided month
without changing anything, and replays a range."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from duration.data import matrices, prepare
from duration.ops import cycle as cy
from duration.tracking.names import CYCLE_EXPERIMENT
from tests.helpers import assert_one_line_error, invoke, spawn, versions


def cycle(name, env, *args, ratio="10"):
    return invoke(
        "cycle",
        "--name",
        name,
        "--trials",
        "1",
        "--max-rounds",
        "30",
        *args,
        env={**env, "DURATION_RMSE_RATIO": ratio},
    )


def test_keep_promote_repeat_and_reject(weak, cli_env, tmp_path):
    client = MlflowClient()
    # drifted (every column, at a threshold of 0.001), but nothing labelled before 2021-01 to
    # train on: one line, nothing changed
    early = cycle(weak, {**cli_env, "DURATION_DRIFT_THRESHOLD": "0.001"}, "--month", "2021-02")
    assert_one_line_error(early, "only 1 labelled month(s) before 2021-02", "--window")
    assert set(versions(weak)) == {"1"} and cy.recorded(weak, "2021-02") is None

    kept = cycle(weak, cli_env, "--month", "2021-02", "--summary", str(tmp_path / "k.json"))
    assert kept.returncode == 0, kept.stderr
    k = json.loads((tmp_path / "k.json").read_text())
    assert (k["verdict"], k["action"], k["challenger_version"]) == ("ok", "kept", None)
    assert set(versions(weak)) == {"1"}

    # RMSE ratio 1.0001: the month counts as degraded, so the cycle retrains
    out = tmp_path / "p.json"
    promoted = cycle(weak, cli_env, "--month", "2021-04", "--summary", str(out), ratio="1.0001")
    assert promoted.returncode == 0, promoted.stderr
    p = json.loads(out.read_text())
    assert (p["verdict"], p["action"], p["production_version"]) == ("degraded", "promoted", "2")
    assert p["train_months"] == ["2021-02"] and p["val_month"] == "2021-03"
    assert p["gate_rmse_challenger"] < p["gate_rmse_champion"]
    v2 = versions(weak)["2"]
    assert v2.current_stage == "Production" and versions(weak)["1"].current_stage == "Archived"
    assert client.get_registered_model(weak).aliases["production"] == "2"
    assert v2.tags["test_month"] == "2021-04"  # its honest test score: the unseen gate month
    trial = client.get_run(v2.run_id)
    search = client.get_run(trial.data.tags["mlflow.parentRunId"])
    for run in (trial, search):  # the gate month is on no run the challenger came from
        assert (run.data.tags["train_month"], run.data.tags["val_month"]) == ("2021-02", "2021-03")
        assert not [k for k, v in run.data.tags.items() if "2021-04" in v], run.data.tags
        assert not [k for k, v in run.data.params.items() if "2021-04" in v]
    decision = client.get_run(p["decision_run_id"])
    assert decision.data.tags["month"] == "2021-04" and decision.data.tags["action"] == "promoted"
    assert decision.data.metrics["gate_rmse_challenger"] == pytest.approx(p["gate_rmse_challenger"])

    again = cycle(weak, cli_env, "--month", "2021-04", "--summary", str(out), ratio="1.0001")
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert json.loads(out.read_text())["decision_run_id"] == p["decision_run_id"]
    assert set(versions(weak)) == {"1", "2"}  # no new version

    rejected = cycle(
        weak,
        cli_env,
        "--month",
        "2021-05",
        "--min-improvement",
        "5",
        "--summary",
        str(out),
        ratio="1.0001",
    )
    assert rejected.returncode == 0, rejected.stderr
    r = json.loads(out.read_text())
    assert (r["action"], r["challenger_version"], r["production_version"]) == ("rejected", "3", "2")
    assert versions(weak)["3"].current_stage == "Staging"

    # replay: 2021-05 is decided already, 2021-06 is not in the mirror
    replay = cycle(
        weak, cli_env, "--from", "2021-05", "--to", "2021-06", "--summary", str(out), ratio="1.0001"
    )
    assert replay.returncode == 0, replay.stderr
    lines = replay.stdout.splitlines()
    assert lines[0].split() == ["month", "Production", "RMSE", "drift", "verdict", "action"]
    assert lines[1].split()[:2] == ["2021-05", "v2"] and "rejected v3" in lines[1]
    assert lines[2].startswith("2021-06: skipped:") and "has no green 2021-06" in lines[2]
    assert [row["month"] for row in json.loads(out.read_text())] == ["2021-05"]
    exp = client.get_experiment_by_name(CYCLE_EXPERIMENT)
    runs = client.search_runs(
        [exp.experiment_id],
        f"attributes.run_name = 'replay-2021-05-2021-06' and tags.model_name = '{weak}'",
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    files = {f.path for f in client.list_artifacts(runs[0].info.run_id, "plots")}
    assert files == {"plots/history.png"}


def test_a_wider_window_trains_on_all_its_older_months(weak, cli_env, settings, tmp_path):
    client, out = MlflowClient(), tmp_path / "w.json"
    proc = cycle(
        weak, cli_env, "--month", "2021-04", "--window", "3", "--summary", str(out), ratio="1.0001"
    )
    assert proc.returncode == 0, proc.stderr
    w = json.loads(out.read_text())
    assert w["train_months"] == ["2021-01", "2021-02"] and w["val_month"] == "2021-03"
    version = versions(weak)[w["challenger_version"]]
    search = client.get_run(client.get_run(version.run_id).data.tags["mlflow.parentRunId"])
    assert search.data.tags["train_month"] == version.tags["train_month"] == "2021-01+2021-02"
    contexts = {
        d.dataset.name: [t.value for t in d.tags if t.key == "mlflow.data.context"][0]
        for d in search.inputs.dataset_inputs
    }
    assert contexts == {
        "green_tripdata_2021-01": "training",
        "green_tripdata_2021-02": "training",
        "green_tripdata_2021-03": "validation",
    }
    # the training matrix holds both months' rides, and the vectorizer saw both
    stage = matrices.features_dir(settings, "green", "default", "2021-01+2021-02")
    rides = [prepare.load_processed(settings, "green", m) for m in ("2021-01", "2021-02")]
    assert len(np.load(stage / "y_2021-01+2021-02.npy")) == sum(len(r) for r in rides)

    # monitoring counts months from the newest training month and refuses one inside the span
    uri = f"models:/{weak}/{version.version}"
    mon = invoke(
        "monitor",
        "--model",
        uri,
        "--month",
        "2021-05",
        "--summary",
        str(tmp_path / "m.json"),
        env=cli_env,
    )
    assert mon.returncode == 0, mon.stderr
    assert json.loads((tmp_path / "m.json").read_text())["months_since_training"] == 3
    inside = invoke("monitor", "--model", uri, "--month", "2021-02", env=cli_env)
    assert_one_line_error(inside, "--month 2021-02", "2021-01+2021-02", "monitor a later month")


def test_no_production_version_is_one_line(cli_env):
    name = f"cycle-empty-{uuid.uuid4().hex[:6]}"
    MlflowClient().create_registered_model(name)
    proc = invoke("cycle", "--name", name, "--month", "2021-04", env=cli_env)
    assert_one_line_error(proc, name, "no Production version", "make pipeline")


def test_ctrl_c_during_the_retrain_records_nothing(weak, cli_env):
    exe = Path(sys.executable).with_name("duration")
    args = [
        str(exe),
        "cycle",
        "--name",
        weak,
        "--month",
        "2021-04",
        "--trials",
        "40",
        "--max-rounds",
        "30",
    ]
    env = {**os.environ, **cli_env, "DURATION_RMSE_RATIO": "1.0001"}
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    client, deadline = MlflowClient(), time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # until the search runs trials
        exps = [e.experiment_id for e in client.search_experiments()]
        search = "attributes.status = 'RUNNING' and tags.search = 'hyperopt-tpe'"
        parents = client.search_runs(exps, search)
        done = "attributes.status = 'FINISHED' and tags.mlflow.parentRunId = '{}'"
        if parents and client.search_runs(exps, done.format(parents[0].info.run_id)):
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "retraining search for 2021-04 was stopped" in lines[0] and "run the month" in lines[0]
    assert set(versions(weak)) == {"1"} and cy.recorded(weak, "2021-04") is None
    exps = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(exps, "attributes.status = 'RUNNING'") == []


def test_two_cycles_of_one_month_at_once_decide_it_once(weak, cli_env, tmp_path):
    """Two processes (as two hosts would) start the same month's cycle together: one decides
    it, the other waits for the month's lease and repeats the recorded decision."""
    args = ["cycle", "--name", weak, "--trials", "1", "--max-rounds", "30", "--month", "2021-02"]
    outs = [tmp_path / f"{i}.json" for i in range(2)]
    procs = [
        spawn([*args, "--summary", str(out)], {**cli_env, "DURATION_RMSE_RATIO": "10"})
        for out in outs
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    results = [json.loads(out.read_text()) for out in outs]
    assert sorted(bool(r.get("repeated")) for r in results) == [False, True]
    assert len({r["decision_run_id"] for r in results}) == 1
    exp = MlflowClient().get_experiment_by_name(CYCLE_EXPERIMENT)
    runs = MlflowClient().search_runs(
        [exp.experiment_id], f"tags.model_name = '{weak}' and tags.month = '2021-02'"
    )
    assert len(runs) == 1
    assert "cycle_lease_2021-02" not in MlflowClient().get_registered_model(weak).tags
