"""A canary and a shadow beside Production, with real nginx, real scoring workers and real
HTTP: the split, stickiness, the mirror, the A/B report against `duration predict`, finish
and abort under traffic, a candidate killed with -9, and the refusals."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient

from benchmarks.support.faults import cpu_hog
from duration.core.metrics import rmse
from duration.core.rides import ride_index
from duration.ops import arms, deploy
from duration.ops.specs import TrafficRequest
from duration.serving import log_read, service
from duration.serving.state import Role, read_state
from tests.helpers import assert_one_line_error, invoke
from tests.integration.serving import env, rides
from tests.integration.test_served import MONTH, replay_in_background, until

pytestmark = pytest.mark.xdist_group("arms")


def logged(s) -> pd.DataFrame:
    return log_read.read(s.paths.serve_log).table.to_pandas()


def predicted(home, name: str, version: str, tmp_path) -> pd.DataFrame:
    """`duration predict` of the whole month by `version`, in the prepared month's order."""
    out = tmp_path / f"v{version}.parquet"
    proc = invoke(
        "predict",
        "--model",
        f"models:/{name}/{version}",
        "--month",
        MONTH,
        "--output",
        str(out),
        env=env(home),
    )
    assert proc.returncode == 0, proc.stderr
    return pd.read_parquet(out)


def arm_rmse_as_predict_has_it(home, name, version, served: pd.DataFrame, tmp_path) -> float:
    rows = ride_index(served["ride_id"], "green", MONTH).to_numpy()
    p = predicted(home, name, version, tmp_path).iloc[rows]
    return rmse(p["duration"].to_numpy(), p["predicted_duration"].to_numpy())


def test_a_canary_splits_by_client_reports_and_aborts_under_traffic(home, name, tmp_path):
    deploy.start(home, name)
    e = env(home)
    proc = invoke("deploy", "--name", name, "--canary", "2", "--weight", "20", env=e)
    assert proc.returncode == 0 and "canary for 20% of clients" in proc.stdout, proc.stderr
    listed = service.status(home).arms
    assert [(a.version, a.role, a.weight) for a in listed] == [
        ("1", "production", 80),
        ("2", "canary", 20),
    ]
    summary = tmp_path / "t.json"
    proc = invoke(
        "traffic",
        "--month",
        MONTH,
        "--rides",
        "3000",
        "--rate",
        "1000",
        "--concurrency",
        "8",
        "--summary",
        str(summary),
        env=e,
    )
    assert proc.returncode == 0, proc.stderr
    t = json.loads(summary.read_text())
    assert t["failed_requests"] == 0 and t["arms"].keys() == {"production", "canary"}
    assert abs(t["arms"]["canary"] / 3000 - 0.20) <= 0.03  # 20 +- 3 points
    assert t["versions"] == {"1": t["arms"]["production"], "2": t["arms"]["canary"]}
    # a client always meets the same arm, whichever ride it sends
    body = json.loads(rides(home, 1).to_json(orient="records", date_format="iso"))
    for client in ("alice", "bob", "carol", "dave"):
        met = {
            requests.post(
                f"{home.serve.url}/invocations",
                json={"dataframe_records": body},
                headers={"X-Client-Id": client, "X-Ride-Id": str(i)},
                timeout=30,
            ).headers["X-Model-Arm"]
            for i in range(15)
        }
        assert len(met) == 1, (client, met)

    assert service.wait_for_log(home, time.time(), timeout=15)  # the direct requests
    report_path = tmp_path / "ab.json"
    proc = invoke("ab", "report", "--month", MONTH, "--summary", str(report_path), env=e)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(report_path.read_text())
    assert r["month"] == MONTH and r["decision"] in ("promote", "abort", "continue")
    prod, cand = r["arms"]
    assert (prod["role"], prod["weight"], cand["role"], cand["weight"]) == (
        "production",
        80,
        "canary",
        20,
    )
    log = logged(home).dropna(subset=["ride_id"])
    for arm in (prod, cand):
        assert arm["ci_low"] < arm["rmse"] < arm["ci_high"]
        mine = log[log["model_version"] == arm["version"]]
        if arm["role"] == "production":  # the production rides while the canary served
            lo, hi = log.loc[log["arm"] == "canary", "served_at"].agg(["min", "max"])
            mine = mine[(mine["served_at"] >= lo) & (mine["served_at"] <= hi)]
        assert arm["rides"] == len(mine)
        expected = arm_rmse_as_predict_has_it(home, name, arm["version"], mine, tmp_path)
        assert arm["rmse"] == pytest.approx(expected, abs=1e-9)
    run = MlflowClient().get_run(json.loads(report_path.read_text())["run_id"])
    assert run.data.tags["decision"] == r["decision"] and run.info.status == "FINISHED"

    # the canary killed with -9 mid-traffic: Production answers its clients
    t, out = replay_in_background(
        home, TrafficRequest(month=MONTH, rides=1500, rate=300, concurrency=4)
    )
    time.sleep(2)
    canary = read_state(home).candidate
    os.killpg(canary.pid, signal.SIGKILL)
    t.join(timeout=120)
    assert out["result"].failed_requests == 0
    st = service.status(home)
    assert st.healthy and not st.arms[1].healthy
    assert "the canary arm (version 2) is down" in st.problem
    # abort under traffic, both cores busy: no request lost, Production alone, the registry
    # as it was
    with cpu_hog(60):
        t, out = replay_in_background(
            home, TrafficRequest(month=MONTH, rides=1500, rate=300, concurrency=4)
        )
        time.sleep(1)
        proc = invoke("deploy", "--name", name, "--abort", env=e)
        t.join(timeout=120)
    assert proc.returncode == 0 and "aborted" in proc.stdout, proc.stderr
    assert out["result"].failed_requests == 0 and out["result"].answered_rides == 1500
    assert [a.role for a in service.status(home).arms] == ["production"]
    assert MlflowClient().get_registered_model(name).aliases["production"] == "1"


def test_a_shadow_answers_no_one_pairs_every_ride_and_finishes(home, name, tmp_path):
    deploy.start(home, name)
    arms.start(home, name, "2", Role.shadow)
    result = rollout_traffic(home, 2000)
    assert result.failed_requests == 0 and result.arms == {"production": 2000}
    assert result.versions == {"1": 2000}  # the shadow never answers a client
    until(lambda: len(logged(home)) == 4000)  # every ride, twice: Production's and the shadow's
    log = logged(home)
    prod, shadow = log[log["arm"] == "production"], log[log["arm"] == "shadow"]
    assert set(shadow["model_version"]) == {"2"} and len(shadow) == 2000
    pairs = prod.merge(shadow, on=["request_id", "ride_id"], suffixes=("", "_shadow"))
    assert len(pairs) == 2000 and pairs["request_id"].is_unique  # one to one
    assert (pairs["prediction"] != pairs["prediction_shadow"]).any()  # two models

    summary = tmp_path / "ab.json"
    proc = invoke("ab", "report", "--month", MONTH, "--summary", str(summary), env=env(home))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(summary.read_text())
    assert [a["role"] for a in r["arms"]] == ["production", "shadow"]
    assert r["arms"][0]["rides"] == r["arms"][1]["rides"] == 2000
    assert r["difference"]["paired"] and r["difference"]["wilcoxon_p"] is not None
    expected = arm_rmse_as_predict_has_it(home, name, "2", shadow, tmp_path)
    assert r["arms"][1]["rmse"] == pytest.approx(expected, abs=1e-9)

    # the shadow killed mid-traffic fails no primary request
    t, out = replay_in_background(
        home, TrafficRequest(month=MONTH, rides=1000, rate=300, concurrency=4)
    )
    time.sleep(1.5)
    os.killpg(read_state(home).candidate.pid, signal.SIGKILL)
    t.join(timeout=120)
    assert out["result"].failed_requests == 0 and out["result"].answered_rides == 1000
    assert "the shadow arm (version 2) is down" in service.status(home).problem
    # finish under traffic, both cores busy: v2 is Production in the registry and in
    # traffic, no request lost
    with cpu_hog(90):
        t, out = replay_in_background(
            home, TrafficRequest(month=MONTH, rides=3000, rate=200, concurrency=4)
        )
        time.sleep(1)
        d = arms.finish(home, name)
        t.join(timeout=180)
    assert d.outcome == "finished" and out["result"].failed_requests == 0
    body = json.loads(rides(home, 1).to_json(orient="records", date_format="iso"))
    r = requests.post(f"{home.serve.url}/invocations", json={"dataframe_records": body}, timeout=30)
    assert (r.headers["X-Model-Version"], r.headers["X-Model-Arm"]) == ("2", "production")
    model = MlflowClient().get_registered_model(name)
    assert model.aliases["production"] == "2"
    assert MlflowClient().get_model_version(name, "1").current_stage == "Archived"
    st = service.status(home)
    assert st.version == "2" and [a.role for a in st.arms] == ["production"]


def rollout_traffic(home, n: int):
    from duration.ops import traffic

    return traffic.replay(home, TrafficRequest(month=MONTH, rides=n, rate=1000, concurrency=8))


def test_the_refusals_are_one_line_and_change_nothing(home, name):
    e = env(home)
    assert_one_line_error(
        invoke("ab", "report", "--month", MONTH, env=e), "nothing served has been logged"
    )
    assert_one_line_error(
        invoke("deploy", "--name", name, "--canary", "2", env=e),
        "is not serving here",
        "make serve",
    )
    deploy.start(home, name)
    for weight in ("0", "100", "-5"):
        proc = invoke("deploy", "--name", name, "--canary", "2", "--weight", weight, env=e)
        assert_one_line_error(proc, f"--weight {weight}", "1-99")
    assert_one_line_error(
        invoke("deploy", "--name", name, "--canary", "1", env=e),
        "version 1 already serves as Production",
    )
    assert_one_line_error(
        invoke("deploy", "--name", name, "--finish", env=e),
        "no canary or shadow is serving",
        "nothing to finish",
    )
    assert_one_line_error(
        invoke("deploy", "--name", name, "--canary", "2", "--shadow", "2", env=e),
        "one change to serving at a time",
    )
    before = read_state(home)
    assert before.candidate is None
    arms.start(home, name, "2", Role.canary, 30)
    proc = invoke("deploy", "--name", name, "--shadow", "2", env=e)
    assert_one_line_error(proc, "a canary of version 2 is already serving", "one candidate")
    proc = invoke("deploy", "--name", name, env=e)
    assert_one_line_error(proc, "a canary of version 2 is serving beside Production", "--force")
    # too few labelled rides for a report
    assert invoke("traffic", "--month", MONTH, "--rides", "60", env=e).returncode == 0
    proc = invoke("ab", "report", "--month", MONTH, env=e)
    assert_one_line_error(proc, "labelled rides of 2021-03 (an arm needs 200)")
    state = read_state(home)
    assert (state.version, state.candidate.version, state.candidate.weight) == ("1", "2", 30)
    assert MlflowClient().get_registered_model(name).aliases["production"] == "1"
    # nothing was started for the refused ones: Production and one canary
    assert Counter(a.role for a in service.status(home).arms) == {
        "production": 1,
        "canary": 1,
    }
    assert np.isfinite(state.candidate.port)


def test_the_cycle_puts_its_challenger_live_then_decides_on_its_rides(home, weak, tmp_path):
    """Live mode: the gate's winner serves as a shadow; the next month's cycle promotes it on
    the A/B report and the gate together."""
    deploy.start(home, weak)
    e = {**env(home), "DURATION_RMSE_RATIO": "1.0001"}  # every month counts as degraded
    args = ("--name", weak, "--trials", "1", "--max-rounds", "30", "--live", "shadow")
    out = tmp_path / "c.json"
    proc = invoke("cycle", *args, "--month", "2021-04", "--summary", str(out), env=e)
    assert proc.returncode == 0, proc.stderr
    c = json.loads(out.read_text())
    assert (c["action"], c["production_version"], c["challenger_version"]) == ("shadow", "1", "2")
    assert "serves as a shadow" in c["reason"]
    assert MlflowClient().get_registered_model(weak).aliases["production"] == "1"
    assert read_state(home).candidate.version == "2"

    proc = invoke(
        "traffic",
        "--month",
        "2021-05",
        "--rides",
        "1000",
        "--rate",
        "1000",
        "--concurrency",
        "8",
        env=e,
    )
    assert proc.returncode == 0, proc.stderr
    proc = invoke("cycle", *args, "--month", "2021-05", "--summary", str(out), env=e)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(out.read_text())
    assert (d["action"], d["production_version"]) == ("promoted", "2"), d["reason"]
    assert (
        d["reason"].startswith("a/b promote")
        and d["gate_rmse_challenger"] < d["gate_rmse_champion"]
    )
    assert MlflowClient().get_registered_model(weak).aliases["production"] == "2"
    st = service.status(home)
    assert st.version == "2" and [a.role for a in st.arms] == ["production"]
