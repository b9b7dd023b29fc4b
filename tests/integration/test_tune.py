"""Hyperparameter search against a real server: nested runs, reproducibility, interrupts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from duration.core.schema import ModelKind
from duration.data import matrices
from duration.data.matrices import Split
from duration.errors import DurationError, Stopped
from duration.infra.net import free_port
from duration.infra.proc import stop_group
from duration.server import tracking_server
from duration.settings import Settings
from duration.training import search as tune
from duration.training import trials
from duration.training.config import SearchConfig
from tests.helpers import children, invoke, running_runs


@pytest.fixture(scope="module")
def inputs(vectorized, mlflow_server):
    return matrices.load_inputs(vectorized, "green", "default", "2021-01", "2021-02")


def search(inputs, kind="xgboost", **kw):
    return tune.search(inputs, SearchConfig(kind=ModelKind(kind), progress=False, **kw))


def test_a_search_ignores_the_callers_active_experiment(inputs):
    """A notebook that called mlflow.set_experiment can still run a search (MLflow refuses
    to resume a trial's run under another active experiment)."""
    from mlflow.tracking import fluent

    mlflow.set_experiment("a-notebook-experiment")
    try:
        r = search(inputs, trials=1, seed=3, max_rounds=4)
    finally:
        fluent._active_experiment_id = None  # leave no active experiment to other tests
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # set_experiment exports it too
    assert r.status == "FINISHED" and r.completed == 1
    (kid,) = children(r.parent_run_id)
    assert kid.info.status == "FINISHED"
    # a green month is under the default budget: searched whole, the trial is registrable
    assert kid.data.params["train_rows"] == str(inputs.tr.X.shape[0])
    assert kid.data.tags["model_uri"].startswith("models:/") and r.budget["refits"] == []
    assert r.best_run_id == kid.info.run_id and not r.budget["sampled"]


def test_a_search_logs_a_parent_and_its_trials_and_the_same_seed_repeats_it(inputs):
    r = search(inputs, trials=2, seed=7, max_rounds=8)
    assert r.status == "FINISHED" and r.completed == 2
    kids = children(r.parent_run_id)
    assert len(kids) == 2
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
    assert parent.data.params["trials"] == "2" and parent.data.params["seed"] == "7"
    assert "max_depth" in parent.data.params["search_space"]
    assert parent.data.params["best_max_depth"] == str(r.best_params["max_depth"])
    assert isinstance(r.best_params["max_depth"], int)

    again = search(inputs, trials=2, seed=7, max_rounds=8)  # the same seed: the same search
    assert again.history == pytest.approx(r.history, abs=1e-6)
    assert again.best_params == r.best_params
    assert [k.data.params for k in children(again.parent_run_id)] == [k.data.params for k in kids]


def test_a_budgeted_search_refits_its_best_trials_on_every_ride(inputs):
    """Trials fit on samples and log no model; the best two refit on every ride, and only
    those may be registered; the best refit is the search's best."""
    from duration.cli.render import budget_line
    from duration.registry.register import top_trials

    n_train, n_val = inputs.tr.X.shape[0], inputs.va.X.shape[0]
    r = search(inputs, trials=4, seed=11, max_rounds=12, budget_rows=20_000, refit=2)
    assert r.status == "FINISHED" and r.completed == 4
    kids = children(r.parent_run_id)
    trials = [k for k in kids if "refit_of" not in k.data.tags]
    refits = [k for k in kids if "refit_of" in k.data.tags]
    assert [k.data.tags["trial"] for k in trials] == ["1", "2", "3", "4"]
    assert [k.info.run_name for k in refits] == ["refit-1", "refit-2"]
    for t in trials:
        assert t.data.params["train_rows"] == "20000" and t.data.params["val_rows"] == "20000"
        assert "model_uri" not in t.data.tags  # fitted on a sample: never registered
    by_score = sorted(trials, key=lambda t: t.data.metrics["val_rmse"])
    assert [k.data.tags["refit_of"] for k in refits] == [t.info.run_id for t in by_score[:2]]
    for k, t in zip(refits, by_score, strict=False):
        assert k.info.status == "FINISHED" and k.data.tags["model_uri"].startswith("models:/")
        assert k.data.params["train_rows"] == str(n_train)
        assert k.data.params["val_rows"] == str(n_val)
        assert k.data.params["max_depth"] == t.data.params["max_depth"]
        assert k.data.metrics["sample_val_rmse"] == t.data.metrics["val_rmse"]
    best = min(refits, key=lambda k: k.data.metrics["val_rmse"])
    parent = MlflowClient().get_run(r.parent_run_id)
    assert parent.data.tags["best_run_id"] == best.info.run_id == r.best_run_id
    assert r.best_val_rmse == pytest.approx(best.data.metrics["val_rmse"])
    assert parent.data.params["budget_rows"] == "20000" and parent.data.metrics["refits"] == 2
    assert r.budget["trial_train_rows"] == 20_000 and r.budget["train_rows"] == n_train
    assert r.budget["refit_s"] > 0 and r.budget["trials_s"] > 0
    assert [x["run_id"] for x in r.budget["refits"]] == [k.info.run_id for k in refits]
    logged = mlflow.artifacts.load_dict(f"runs:/{r.parent_run_id}/budget.json")
    assert logged == json.loads(json.dumps(r.budget))
    line = budget_line(r.budget)  # what `tune` and `pipeline` print
    assert f"fit on 20,000 of {n_train:,} rides" in line and "the best 2 were refit" in line
    found = top_trials(parent, 5)
    assert sorted(x.info.run_id for x in found) == sorted(k.info.run_id for k in refits)


def test_random_forest_search(inputs):
    r = search(inputs, "random_forest", trials=1, seed=9)  # 40 trees of depth 10: a quick draw
    assert r.completed == 1 and 4 < r.best_val_rmse < 9


def test_timeout_stops_cleanly(inputs):
    r = search(inputs, trials=40, seed=3, timeout=6)
    assert r.status == "KILLED" and r.completed < 40
    parent = MlflowClient().get_run(r.parent_run_id)
    assert parent.info.status == "KILLED"
    statuses = [k.info.status for k in children(r.parent_run_id)]
    assert statuses.count("FINISHED") == r.completed
    # the trial in flight at the deadline ends KILLED (none if the deadline fell between two)
    assert statuses.count("KILLED") <= 1 and len(statuses) == r.completed + statuses.count("KILLED")
    if r.completed:
        assert parent.data.metrics["best_val_rmse"] == pytest.approx(r.best_val_rmse)
    assert running_runs() == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_stop_cleanly(vectorized, cli_env, tmp_path, sig):
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
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err
    assert proc.returncode == 130, err
    data = json.loads(summary.read_text())
    assert data["status"] == "KILLED" and data["completed"] < 40
    assert "stopped early" in err
    assert running_runs() == []
    assert MlflowClient().get_run(data["parent_run_id"]).info.status == "KILLED"


def test_zero_trials_is_refused(inputs):
    with pytest.raises(DurationError, match="at least 1"):
        search(inputs, trials=0)


@pytest.fixture
def make_spec(inputs):
    """Trial specs under a parent run of their own, which ends FINISHED after the test."""
    client, parents = MlflowClient(), []

    def make(**kw) -> trials.TrialSpec:
        exp, parent = tune._start_parent(client, inputs, SearchConfig(trials=1))
        parents.append(parent)
        data = trials.DataRef(
            settings=inputs.settings,
            color=inputs.color,
            features=inputs.features,
            train=inputs.train,
            val=inputs.val,
        )
        defaults = dict(
            tracking_uri=mlflow.get_tracking_uri(),
            experiment_id=exp,
            parent_run_id=parent,
            kind=ModelKind.xgboost,
            seed=1,
            fixed={"n_estimators": 5},
            tags={"color": "green"},
            data=data,
        )
        return trials.TrialSpec(**{**defaults, **kw})

    yield make
    for parent in parents:
        client.set_terminated(parent, "FINISHED")


def test_a_failing_trial_is_recorded_and_returns_fail(make_spec, inputs):
    spec = make_spec()
    runtime = trials.TrialRuntime(spec=spec, inputs=inputs)
    result = trials.objective({"max_depth": 6, "learning_rate": -1.0}, spec, runtime)
    assert result["status"] == "fail" and "learning_rate" in result["error"]
    run = MlflowClient().get_run(result["run_id"])
    assert run.info.status == "FAILED"
    assert "learning_rate" in run.data.tags["error"]
    assert run.data.tags["mlflow.parentRunId"] == spec.parent_run_id


def test_failing_trials_do_not_abort_the_search(inputs):
    """Every trial fails (the validation matrix lacks columns, so xgboost refuses it): all are
    tried, each recorded FAILED, and the search says so in one line."""
    va = Split(inputs.va.month, inputs.va.X[:, :5].tocsr(), inputs.va.y)
    with pytest.raises(DurationError, match="all 3 trials failed") as e:
        search(replace(inputs, va=va), trials=3, seed=2, max_rounds=5)
    parent = MlflowClient().get_run(re.search(r"see run (\w+)", str(e.value)).group(1))
    assert parent.info.status == "FAILED" and parent.data.metrics["failed_trials"] == 3
    assert [k.info.status for k in children(parent.info.run_id)] == ["FAILED"] * 3
    assert running_runs() == []


def test_the_objective_runs_in_another_process(make_spec, tmp_path):
    """The spec pickles small (no matrices); a fresh process loads them from the stage files
    and logs its child run by the parent's id."""
    import pickle

    spec = make_spec()
    blob = tmp_path / "spec.pkl"
    blob.write_bytes(pickle.dumps(spec))
    assert len(blob.read_bytes()) < 10_000 and pickle.loads(blob.read_bytes()) == spec
    code = (
        "import pickle, sys, json; from duration.training import trials; "
        "spec = pickle.loads(open(sys.argv[1], 'rb').read()); "
        "print(json.dumps(trials.objective({'max_depth': 5, 'learning_rate': 0.2}, spec)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(blob)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "ok" and 4 < result["loss"] < 9
    run = MlflowClient().get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == spec.parent_run_id
    assert run.data.params["n_estimators"] == "5"


def test_a_stopped_search_starts_no_trial(make_spec, inputs):
    stop = threading.Event()
    stop.set()
    spec = make_spec()
    runtime = trials.TrialRuntime(spec=spec, inputs=inputs, stop=stop)
    with pytest.raises(Stopped, match="interrupted"):
        trials.objective({"max_depth": 5, "learning_rate": 0.2}, spec, runtime)
    late = make_spec(deadline=time.time() - 1)  # past its deadline: a Spark task's stop
    with pytest.raises(Stopped, match="timeout"):
        trials.objective({"max_depth": 5, "learning_rate": 0.2}, late)
    assert children(spec.parent_run_id) == [] and children(late.parent_run_id) == []


def test_the_search_space_is_declared_once():
    from duration.training.space import SPACES, space

    assert set(space("xgboost")) == set(SPACES["xgboost"])
    with pytest.raises(DurationError, match="no search space"):
        space("linear")


def _long_tune(env: dict, seed: int, **popen) -> subprocess.Popen:
    """A 40-trial `duration tune` in its own process, for a test to kill or orphan."""
    exe = Path(sys.executable).with_name("duration")
    args = [str(exe), "tune", "--trials", "40", "--seed", str(seed), "--max-rounds", "400"]
    return subprocess.Popen(args, env={**os.environ, **env}, stdout=subprocess.DEVNULL, **popen)


def test_runs_reap_ends_the_runs_of_a_killed_search(vectorized, cli_env):
    """kill -9 leaves the parent and its trial RUNNING; `runs reap` ends both FAILED, and a
    second reap finds nothing."""
    proc = _long_tune(cli_env, seed=8, stderr=subprocess.DEVNULL)
    client, deadline, parent = MlflowClient(), time.monotonic() + 120, None
    while parent is None and time.monotonic() < deadline:
        exps = [e.experiment_id for e in client.search_experiments()]
        where = f"attributes.status = 'RUNNING' and tags.pid = '{proc.pid}'"
        found = [r for r in client.search_runs(exps, where) if r.data.tags.get("search")]
        if found and children(found[0].info.run_id):
            parent = found[0].info.run_id
        time.sleep(0.3)
    proc.kill()
    proc.wait()
    assert parent is not None
    left = [parent] + [k.info.run_id for k in children(parent) if k.info.status == "RUNNING"]
    assert all(client.get_run(r).info.status == "RUNNING" for r in left)
    out = invoke("runs", "reap", env=cli_env)
    assert out.returncode == 0, out.stderr
    for run_id in left:
        run = client.get_run(run_id)
        assert run.info.status == "FAILED" and "duration runs reap" in run.data.tags["reaped"]
        assert run_id in out.stdout
    assert invoke("runs", "reap", env=cli_env).stdout.strip() == "reaped 0 run(s)"


def test_a_dead_server_stops_the_search_within_a_minute(vectorized, cli_env, tmp_path):
    """The server dies mid-search: one line well within a minute (not MLflow's minutes of
    retries), and once it is back `runs reap` ends what was left RUNNING."""
    server = tracking_server.Server(
        store=tracking_server.sqlite_store(tmp_path / "db.sqlite"),
        artifacts=tmp_path / "art",
        state=tmp_path / "st",
        port=free_port(),
    )
    uri = server.url
    srv = tracking_server.start(server, Settings())
    env = {**cli_env, "MLFLOW_TRACKING_URI": uri, "DURATION_SERVER_CHECK_S": "2"}
    proc = _long_tune(env, seed=3, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(uri)
    try:
        deadline = time.monotonic() + 120
        while not _running_trials(client) and time.monotonic() < deadline:
            time.sleep(0.3)
        stop_group(srv.pid)
        died = time.monotonic()
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - died
    finally:
        proc.kill()
    assert proc.returncode == 1 and took < 30, (took, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"{uri} stopped answering" in lines[0] and "duration runs reap" in lines[0]
    srv = tracking_server.start(server, Settings())  # the same store, back on the same port
    try:
        left = _running_trials(client)
        assert left  # the parent and its trial could not be ended while the server was away
        out = invoke("runs", "reap", env=env)
        assert out.returncode == 0 and all(r in out.stdout for r in left), out.stdout
        assert not _running_trials(client)
    finally:
        stop_group(srv.pid)


def _running_trials(client) -> list[str]:
    """The RUNNING runs of the search experiment (a parent with a trial in flight)."""
    exp = client.get_experiment_by_name("nyc-taxi-duration-search")
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    return [r.info.run_id for r in runs] if len(runs) >= 2 else []
