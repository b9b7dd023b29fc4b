"""`duration monitor` against a real server and the mirror: the reference profile saved at
registration, realised quality equal to `predict`'s, drift on a shifted month, the run it
logs, and one line for each bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from duration.core import drift
from duration.core.drift import VERDICTS
from duration.data import reference
from duration.errors import DurationError
from duration.ops import monitor
from duration.registry.profile import load_profile
from duration.tracking.names import MONITOR_EXPERIMENT
from tests.helpers import assert_one_line_error, invoke
from tests.integration.conftest import NAME

# The first pipeline's v1 is what these tests monitor: built once, on the group's worker.
pytestmark = pytest.mark.xdist_group("first")
V1 = f"models:/{NAME}/1"


def test_a_profile_is_saved_at_registration(first):
    v = MlflowClient().get_model_version(NAME, "1")
    p = load_profile(v.run_id)
    assert p is not None
    assert (p.meta["train_month"], p.meta["color"]) == ("2021-01", "green")
    assert len(p.frame) == p.meta["sample_rows"] == min(reference.ROWS, p.meta["rows"])
    assert list(p.frame.columns) == [
        *reference.NUMERIC,
        *reference.CATEGORICAL,
        "prediction",
        "duration",
    ]
    assert 100 < len(p.meta["zones"]) <= 265
    rmse = float(np.sqrt(np.mean((p.frame["prediction"] - p.frame["duration"]) ** 2)))
    assert 3 < rmse < 8  # the model's own predictions on its training rides


def test_monitor_equals_predict_and_keeps_one_run_per_month(first, cli_env, tmp_path):
    out = tmp_path / "pred.parquet"
    pred = invoke("predict", "--model", V1, "--month", "2021-04", "--output", str(out), env=cli_env)
    assert pred.returncode == 0, pred.stderr
    df = pd.read_parquet(out)
    rmse = float(np.sqrt(np.mean((df.predicted_duration - df.duration) ** 2)))
    runs = []
    for i in range(2):
        summary = tmp_path / f"s{i}.json"
        proc = invoke(
            "monitor", "--model", V1, "--month", "2021-04", "--summary", str(summary), env=cli_env
        )
        assert proc.returncode == 0, proc.stderr
        s = json.loads(summary.read_text())
        runs.append(s["run_id"])
    required = {"run_id", "model_version", "month", "rmse", "reference_rmse", "drift_share"}
    assert required | {"verdict"} <= set(s)
    assert s["rmse"] == pytest.approx(rmse, rel=1e-9) and s["rows"] == len(df)
    assert s["model_version"] == "1" and s["month"] == "2021-04"
    assert s["months_since_training"] == 3 and s["verdict"] in VERDICTS
    assert f"RMSE {rmse:.4f}" in proc.stdout and s["verdict"] in proc.stdout
    slices = pd.DataFrame(s["slices"])
    assert set(slices.slice_by) == {"pickup_borough", "hour_band", "distance_band"}
    assert (slices.groupby("slice_by").rides.sum() == len(df)).all()
    assert "Manhattan" in set(slices.slice)
    client = MlflowClient()
    exp = client.get_experiment_by_name(MONITOR_EXPERIMENT)
    live = client.search_runs(
        [exp.experiment_id],
        f"tags.model_name = '{NAME}' and tags.model_version = '1' and tags.month = '2021-04'",
    )
    assert [r.info.run_id for r in live] == [runs[1]]  # the rerun replaced the first
    run = live[0]
    assert run.info.status == "FINISHED" and run.data.tags["verdict"] == s["verdict"]
    history = client.get_metric_history(run.info.run_id, "rmse")
    assert [(m.step, m.value) for m in history] == [(3, pytest.approx(rmse))]
    files = {f.path for f in client.list_artifacts(run.info.run_id, "monitoring")}
    assert files == {f"monitoring/{n}" for n in ("report.html", "slices.csv", "drift.csv")}


@pytest.fixture
def shifted(vectorized, mirror_path, tmp_path):
    """A mirror of two made-up months: 2030-01 is green 2021-02 with every trip distance
    scaled by 1.5, 2030-02 is 2021-02 unchanged, 2030-03 has no rides; settings that read
    from it."""
    trips = tmp_path / "tlc" / "trip-data"
    trips.mkdir(parents=True)
    os.symlink(mirror_path / "misc", tmp_path / "tlc" / "misc")
    t = pq.read_table(mirror_path / "trip-data" / "green_tripdata_2021-02.parquet")
    i = t.schema.get_field_index("trip_distance")
    scaled = t.set_column(i, "trip_distance", pc.multiply(t["trip_distance"], 1.5))
    pq.write_table(scaled, trips / "green_tripdata_2030-01.parquet")
    pq.write_table(t, trips / "green_tripdata_2030-02.parquet")
    pq.write_table(t.slice(0, 0), trips / "green_tripdata_2030-03.parquet")
    return vectorized.but(
        paths={"data_dir": tmp_path / "data", "tlc_url": f"file://{tmp_path}/tlc"}
    )


def test_a_shifted_month_drifts_and_an_unchanged_one_does_not(first, shifted):
    s = shifted.but(monitor={"rmse_ratio": 10.0})  # here the inputs, not the RMSE, decide
    moved = monitor.measure(s, V1, "green", "2030-01")
    same = monitor.measure(s, V1, "green", "2030-02")
    drifted = {d["column"] for d in moved.drift if d["drifted"]}
    assert "trip_distance" in drifted and moved.prediction_drift >= s.monitor.drift_threshold
    assert moved.verdict == "drift"
    assert same.verdict == "ok" and same.drift_share == 0
    assert same.prediction_drift < s.monitor.drift_threshold
    assert moved.rmse > same.rmse  # the model reads distance: scaled, it errs more
    strict = monitor.thresholds(s.but(monitor={"rmse_ratio": moved.rmse_ratio * 0.99}).monitor)
    verdict = drift.verdict(moved.rmse_ratio, moved.drift_share, moved.prediction_drift, strict)
    assert verdict == "degraded"


def test_a_month_without_rides_is_one_line_and_logs_nothing(first, shifted):
    exp = MlflowClient().get_experiment_by_name(MONITOR_EXPERIMENT)
    before = MlflowClient().search_runs([exp.experiment_id]) if exp else []
    with pytest.raises(DurationError, match="green 2030-03: none of 0 rides") as e:
        monitor.monitor(shifted, V1, "green", "2030-03")
    assert "pick another month" in str(e.value) and "\n" not in str(e.value)
    exp = MlflowClient().get_experiment_by_name(MONITOR_EXPERIMENT)
    assert len(MlflowClient().search_runs([exp.experiment_id]) if exp else []) == len(before)


def test_a_version_without_a_profile_or_a_way_to_rebuild_one_is_one_line(first, cli_env):
    """The search's other trial, registered by hand: its run has no profile, and the version
    has no color or train_month tag to rebuild one from."""
    import mlflow

    other = [c for c in first.registered["candidates"] if c["run_id"] != first.registered["run_id"]]
    bare = mlflow.register_model(other[0]["model_uri"], f"{NAME}-bare")
    proc = invoke(
        "monitor",
        "--model",
        f"models:/{NAME}-bare/{bare.version}",
        "--month",
        "2021-04",
        env=cli_env,
    )
    assert_one_line_error(proc, f"v{bare.version}", "no reference profile", "duration register")


@pytest.mark.parametrize(
    "args, env, needles",
    [
        (["--month", "2020-12"], {}, ["--month 2020-12", "2021-01", "later month"]),
        (["--month", "2021-01"], {}, ["not after", "training month 2021-01"]),
        (["--month", "2024-06"], {}, ["2024-06", "not available"]),
        (["--model", "models:/no-such-model@production"], {}, ["no-such-model"]),
        (["--model", f"models:/{NAME}@champion"], {}, ["@champion"]),
        (["--model", "runs:/0123/model"], {}, ["runs:/0123/model", "not a registered version"]),
        (["--drift-share", "1.5"], {}, ["--drift-share", "out of range"]),
        ([], {"DURATION_RMSE_RATIO": "0.5"}, ["DURATION_RMSE_RATIO", "out of range"]),
        ([], {"DURATION_DRIFT_THRESHOLD": "x"}, ["DURATION_DRIFT_THRESHOLD", "not a number"]),
    ],
)
def test_bad_monitor_input(first, cli_env, args, env, needles):
    base = ["monitor", "--model", V1, "--month", "2021-04"]
    assert_one_line_error(invoke(*base, *args, env={**cli_env, **env}), *needles)
