"""What the served model records: the prediction log under real traffic (`duration traffic`
through real nginx and real scoring workers), its faults (a worker killed with -9, a
deploy, a full disk), bad requests, and `monitor --served` against `duration predict`."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient

from benchmarks.support.faults import kill_try
from duration.core.metrics import rmse
from duration.core.rides import ride_ids
from duration.ops import deploy, traffic
from duration.ops.specs import TrafficRequest
from duration.registry import uris
from duration.serving import log_read, service
from duration.settings import Settings
from duration.tracking.names import MONITOR_EXPERIMENT
from tests.helpers import assert_one_line_error, full_disk, invoke
from tests.integration.serving import env, payload, rides

pytestmark = pytest.mark.xdist_group("served")
MONTH = "2021-03"  # the newest month the session prepared, and the smoke test's


def logged(s: Settings) -> pd.DataFrame:
    return log_read.read(s.paths.serve_log).table.to_pandas()


def until(check, timeout: float = 30.0) -> None:
    """Wait for `check()` to be true (fail after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def replay_in_background(s: Settings, req: TrafficRequest) -> tuple[threading.Thread, dict]:
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(result=traffic.replay(s, req)), daemon=True)
    t.start()
    return t, out


def test_each_answered_ride_is_logged_once_and_monitored_as_predict_scores_it(home, name, tmp_path):
    deploy.start(home, name)
    e = env(home)
    summary = tmp_path / "traffic.json"
    proc = invoke(
        "traffic",
        "--month",
        MONTH,
        "--rides",
        "5000",
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
    assert t["answered_rides"] == 5000 and t["failed_requests"] == 0
    assert t["versions"] == {"1": 5000}
    # a request of its own: the id it is answered with is the one in the log
    r = requests.post(f"{home.serve.url}/invocations", json=payload(rides(home, 1)), timeout=30)
    assert r.status_code == 200 and len(r.headers["X-Request-Id"]) == 32
    status = json.loads(invoke("serve", "status", env=e).stdout)
    assert len(status["workers"]) == home.serve.workers and status["logging"]["writing"]
    deploy.stop(home)  # a graceful stop flushes every worker's log
    log = logged(home)
    assert len(log) == 5001 and log["request_id"].is_unique
    assert r.headers["X-Request-Id"] in set(log["request_id"])
    served = log.dropna(subset=["ride_id"])
    assert sorted(served["ride_id"]) == ride_ids("green", MONTH, np.arange(5000))
    assert set(served["model_version"]) == {"1"} and set(served["arm"]) == {"production"}
    assert served["pickup_datetime"].notna().all() and (served["latency_ms"] > 0).all()

    exported = tmp_path / "served.parquet"
    proc = invoke("serve", "log", "--output", str(exported), env=e)
    assert proc.returncode == 0 and "5001 served rides (v1: 5001)" in proc.stdout
    assert len(pd.read_parquet(exported)) == 5001

    report_path = tmp_path / "served.json"
    proc = invoke("monitor", "--served", "--month", MONTH, "--summary", str(report_path), env=e)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_path.read_text())
    (v,) = report["versions"]
    assert v["model_version"] == "1" and v["served_rides"] == 5000 and v["labelled_share"] == 1.0
    # `duration predict` scores the same rides (the month's first 5000) in-process
    out = tmp_path / "predicted.parquet"
    proc = invoke(
        "predict", "--model", f"models:/{name}/1", "--month", MONTH, "--output", str(out), env=e
    )
    assert proc.returncode == 0, proc.stderr
    first = pd.read_parquet(out).head(5000)
    expected = rmse(first["duration"], first["predicted_duration"])
    assert v["rmse"] == pytest.approx(expected, abs=1e-9)
    by_ride = served.set_index("ride_id").loc[ride_ids("green", MONTH, np.arange(5000))]
    diff = np.abs(by_ride["prediction"].to_numpy() - first["predicted_duration"].to_numpy())
    assert diff.max() <= 1e-6  # the served answers are the model's own
    slices = pd.DataFrame(report["slices"])
    assert slices["rides"].groupby(slices["slice_by"]).sum().eq(5000).all()
    run = MlflowClient().get_run(report["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["kind"] == "served"
    assert run.data.metrics["v1_rmse"] == pytest.approx(v["rmse"])
    exp = MlflowClient().get_experiment(run.info.experiment_id)
    assert exp.name == MONITOR_EXPERIMENT


def test_a_worker_killed_with_minus_9_loses_no_answered_ride_and_breaks_no_answer(home, name):
    """Twice, 5,000 real rides at 500 a second, a worker killed with -9 a third of the way
    in: every ride answered 200 is in the log, once; no client got half an answer.
    (`make bench-faults` does five such tries and reports them.)"""
    s = home.but(serve={"workers": 2})
    deploy.start(s, name)
    for _ in range(2):
        got = kill_try(s, MONTH, rides=5000, rate=500)
        assert (got.broken, got.lost, got.twice) == (0, 0, 0), got
        assert got.answered == got.logged == 5000, got
        assert got.killed not in service.status(s).workers  # its supervisor started another


def test_a_deploy_under_traffic_loses_no_request_and_the_log_shows_both(home, name):
    deploy.start(home, name)
    t, out = replay_in_background(
        home, TrafficRequest(month=MONTH, rides=6000, rate=200, concurrency=4)
    )
    time.sleep(3)
    uris.set_production(name, "2")
    d = deploy.deploy(home, name)
    t.join(timeout=180)
    result = out["result"]
    assert d.outcome == "deployed" and result.failed_requests == 0
    assert set(result.versions) == {"1", "2"} and sum(result.versions.values()) == 6000
    deploy.stop(home)
    log = logged(home)
    # the old workers were drained, then stopped gracefully: their logs are all there
    assert len(log) == 6000 and log["request_id"].is_unique
    assert log["model_version"].value_counts().to_dict() == result.versions


@pytest.fixture
def small_disk(home) -> Path:
    """A 3 MB tmpfs as the prediction log's folder, filled up: a real full disk."""
    with full_disk(home.paths.serve_log) as folder:
        try:
            yield folder
        finally:
            service.stop(home)


def test_a_full_disk_never_stops_serving_and_logging_resumes(home, name, small_disk):
    s = home.but(serve={"flush_s": 0.5})
    deploy.start(s, name)
    result = traffic.replay(s, TrafficRequest(month=MONTH, rides=400, rate=400, concurrency=4))
    assert result.failed_requests == 0 and result.answered_rides == 400
    until(lambda: service.status(s).logging.counts.pending_rides == 400)  # each worker's count
    st = service.status(s)
    assert st.healthy and "cannot write" in st.problem and "serving goes on" in st.problem
    assert not st.logging.counts.writing and st.logging.counts.logged_rides == 0
    log_file = s.paths.serve_state / "scoring-v1.log"
    assert "prediction log: cannot write" in log_file.read_text()
    assert not list(small_disk.glob("*.parquet")) and not list(small_disk.glob(".*.part"))
    (small_disk / "filler").unlink()  # space returns
    until(lambda: service.status(s).logging.counts.logged_rides == 400)
    st = service.status(s)
    assert st.logging.counts.writing and st.problem is None
    assert "writing to" in log_file.read_text() and "again" in log_file.read_text()
    assert len(logged(s)) == 400 and logged(s)["request_id"].is_unique


def test_bad_requests_get_a_json_4xx_and_no_worker_is_lost(home, name):
    s = home.but(serve={"flush_s": 0.2})
    deploy.start(s, name)
    workers = service.status(s).workers
    record = json.loads(rides(s, 1).to_json(orient="records", date_format="iso"))[0]
    missing = {k: v for k, v in record.items() if k != "DOLocationID"}
    cases = [
        (b"{garbage", 400, "not JSON"),
        (json.dumps({"dataframe_records": [missing]}).encode(), 400, "lack ['DOLocationID']"),
        (
            json.dumps({"dataframe_records": [{**record, "PULocationID": "x"}]}).encode(),
            400,
            "PULocationID",
        ),
        (json.dumps({"dataframe_records": []}).encode(), 400, "no rides"),
        (json.dumps({"dataframe_records": [record] * 10_000}).encode(), 413, "at most 5000"),
        (b" " * 9_000_000, 413, "over 8m"),
        (
            json.dumps({"dataframe_records": [{**record, "ride_id": [1]}]}).encode(),
            400,
            "ride 0: ride_id is a list",
        ),
        # hostile or nonsensical: refused whole, with the ride, the field and the range
        (b"[" * 10_000 + b"]" * 10_000, 400, "deeper than 8 levels"),
        (odd(record, trip_distance=float("inf")), 400, "ride 1: trip_distance is inf"),
        (odd(record, VendorID=float("nan")), 400, "ride 1: VendorID is nan"),
        (odd(record, trip_distance=-1.5), 400, "ride 1: trip_distance is -1.5"),
        (odd(record, DOLocationID=99999), 400, "ride 1: DOLocationID is 99999"),
        (
            odd(record, lpep_pickup_datetime="2031-01-01T00:00:00"),
            400,
            "lpep_pickup_datetime is '2031-01-01T00:00:00', which is not allowed: give a time "
            "from 2009-01-01",
        ),
    ]
    for body, status, says in cases:
        r = requests.post(
            f"{s.serve.url}/invocations",
            data=body,
            timeout=30,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == status, (says, r.text[:200])
        assert says in r.json()["message"] and "Traceback" not in r.text
    assert service.status(s).workers == workers  # no worker lost
    ok = requests.post(
        f"{s.serve.url}/invocations", json={"dataframe_records": [record]}, timeout=30
    )
    assert ok.status_code == 200
    # a value of an odd type (MLflow's server converts it), sent with no Content-Type: answered
    both = requests.post(f"{s.serve.url}/invocations", data=odd(record, VendorID="2"))
    assert both.status_code == 200 and len(both.json()["predictions"]) == 2, both.text
    # counted apart, never logged as predictions (nginx answers the 9 MB body itself)
    until(lambda: service.status(s).logging.counts.refused_requests == len(cases) - 1)
    assert service.status(s).logging.counts.refused_rides == 1 + 1 + 5 * 2  # past parsing
    deploy.stop(s)
    assert len(logged(s)) == 1 + 2


def odd(record: dict, **change: object) -> bytes:
    """A request of a good ride, then the same ride changed (JSON's NaN and Infinity as
    Python writes them)."""
    return json.dumps({"dataframe_records": [record, {**record, **change}]}).encode()


def test_the_commands_refuse_in_one_line(home, name):
    e = env(home)
    proc = invoke("traffic", "--month", MONTH, "--rides", "10", env=e)
    assert_one_line_error(proc, f"nothing serves at {home.serve.url}", "make serve")
    for args in (
        ("serve", "log", "--output", str(home.paths.home / "x.parquet")),
        ("monitor", "--served", "--month", MONTH),
    ):
        assert_one_line_error(invoke(*args, env=e), "nothing served has been logged", "traffic")
    deploy.start(home, name)
    proc = invoke("traffic", "--month", "2030-01", env=e)
    assert_one_line_error(proc, "2030-01", "not available")
    proc = invoke("traffic", "--month", MONTH, "--rides", "10000000", env=e)
    assert_one_line_error(proc, "fewer than --rides 10000000")
    assert invoke("traffic", "--month", MONTH, "--rides", "20", env=e).returncode == 0
    # a client's rides of a month the TLC has not published yet
    record = json.loads(rides(home, 1).to_json(orient="records", date_format="iso"))[0]
    body = {"dataframe_records": [{**record, "ride_id": "green-2030-01-000001"}]}
    assert requests.post(f"{home.serve.url}/invocations", json=body, timeout=30).ok
    deploy.stop(home)
    proc = invoke("monitor", "--served", "--month", "2021-02", env=e)
    assert_one_line_error(proc, "none of the 21 logged rides is a green 2021-02 ride")
    proc = invoke("monitor", "--served", "--month", "2030-01", env=e)
    assert_one_line_error(proc, "2030-01's real durations are not published yet")
