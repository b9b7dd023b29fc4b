"""`duration cycle` against a real server and the mirror: it keeps, promotes and rejects in
constructed cases, never lets the challenger see the gate month, repeats a decided month
without changing anything, and replays a range."""

from __future__ import annotations

import json
import uuid

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from duration.config import CYCLE_EXPERIMENT
from tests.conftest import assert_one_line_error, run_cli

# Uses the first pipeline's runs: on the group's worker, where it is built once.
pytestmark = pytest.mark.xdist_group("first")


@pytest.fixture
def weak(first) -> str:
    """A model of its own whose Production v1 is the course's linear baseline (trained on
    2021-01, no reference profile yet): any searched xgboost beats it."""
    name = f"cycle-{uuid.uuid4().hex[:8]}"
    base = first.baselines[0]
    uri = MlflowClient().get_run(base["run_id"]).data.tags["model_uri"]
    mv = mlflow.register_model(uri, name)
    client = MlflowClient()
    tags = {"color": "green", "train_month": "2021-01", "test_rmse": f"{base['val_rmse']:.6f}"}
    for k, v in tags.items():
        client.set_model_version_tag(name, mv.version, k, v)
    client.transition_model_version_stage(name, mv.version, "Production")
    client.set_registered_model_alias(name, "production", mv.version)
    return name


def cycle(name, env, *args, ratio="10"):
    return run_cli("cycle", "--name", name, "--trials", "1", "--max-rounds", "30", *args,
                   env={**env, "DURATION_RMSE_RATIO": ratio})  # fmt: skip


def versions(name: str) -> dict:
    return {v.version: v for v in MlflowClient().search_model_versions(f"name = '{name}'")}


def test_keep_promote_repeat_and_reject(weak, cli_env, tmp_path):
    client = MlflowClient()
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

    rejected = cycle(weak, cli_env, "--month", "2021-05", "--min-improvement", "5",
                     "--summary", str(out), ratio="1.0001")  # fmt: skip
    assert rejected.returncode == 0, rejected.stderr
    r = json.loads(out.read_text())
    assert (r["action"], r["challenger_version"], r["production_version"]) == ("rejected", "3", "2")
    assert versions(weak)["3"].current_stage == "Staging"

    # replay: 2021-05 is decided already, 2021-06 is not in the mirror
    replay = cycle(weak, cli_env, "--from", "2021-05", "--to", "2021-06",
                   "--summary", str(out), ratio="1.0001")  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    lines = replay.stdout.splitlines()
    assert lines[0].split() == ["month", "Production", "RMSE", "drift", "verdict", "action"]
    assert lines[1].split()[:2] == ["2021-05", "v2"] and "rejected v3" in lines[1]
    assert lines[2].startswith("2021-06: skipped:") and "has no green 2021-06" in lines[2]
    assert [row["month"] for row in json.loads(out.read_text())] == ["2021-05"]
    exp = client.get_experiment_by_name(CYCLE_EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], "attributes.run_name = 'replay-2021-05-2021-06'"
                              f" and tags.model_name = '{weak}'")  # fmt: skip
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    files = {f.path for f in client.list_artifacts(runs[0].info.run_id, "plots")}
    assert files == {"plots/history.png"}


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--month", "2021-04", "--window", "3"], ["--window 3"]),
        (["--from", "2021-05", "--to", "2021-02"], ["--from 2021-05 is after --to 2021-02"]),
        (["--month", "2021-04", "--from", "2021-05", "--to", "2021-06"], ["--month", "--from"]),
        ([], ["--month", "--from"]),
        (["--month", "2021-04", "--trials", "0"], ["--trials 0"]),
    ],
)
def test_bad_cycle_input(first, cli_env, args, needles):
    assert_one_line_error(run_cli("cycle", *args, env=cli_env), *needles)


def test_no_production_version_is_one_line(first, cli_env):
    name = f"cycle-empty-{uuid.uuid4().hex[:6]}"
    MlflowClient().create_registered_model(name)
    proc = run_cli("cycle", "--name", name, "--month", "2021-04", env=cli_env)
    assert_one_line_error(proc, name, "no Production version", "make pipeline")
