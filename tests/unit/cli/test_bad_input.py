"""Bad input through the real `duration` command: one clear line, non-zero exit."""

from __future__ import annotations

import pandas as pd
import pytest

from duration.infra.net import free_port
from tests.helpers import assert_one_line_error, invoke, run_cli
from tests.unit.conftest import rides


@pytest.fixture
def env(site):
    return {
        "DURATION_TLC_URL": site.paths.tlc_url,
        "DURATION_DATA_DIR": str(site.paths.data),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
    }


def test_help_lists_the_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for cmd in (
        "download",
        "prepare",
        "vectorize",
        "train",
        "tune",
        "register",
        "promote",
        "predict",
        "pipeline",
        "server",
    ):
        assert cmd in proc.stdout


def test_month_not_published(env):
    assert_one_line_error(
        run_cli("download", "--month", "2019-07", env=env),
        "2019-07",
        "not available",
        "DURATION_TLC_URL",
    )


def test_truncated_parquet(env, site):
    proc = run_cli("download", "--month", "2021-02", env=env)
    assert_one_line_error(proc, "green_tripdata_2021-02.parquet", "not a readable parquet")
    assert not any(site.paths.raw.glob("*2021-02*"))


def test_missing_columns(env, site):
    base = site.paths.tlc_url.removeprefix("file://")
    rides().drop(columns=["trip_distance", "DOLocationID"]).to_parquet(
        f"{base}/trip-data/green_tripdata_2021-05.parquet"
    )
    proc = run_cli("prepare", "--month", "2021-05", env=env)
    assert_one_line_error(
        proc, "green_tripdata_2021-05.parquet", "lacks required columns", "DOLocationID"
    )


def test_empty_after_filter(env, site):
    base = site.paths.tlc_url.removeprefix("file://")
    rides(minutes=(0.1, 0.2, 90, 120, 200, 300)).to_parquet(
        f"{base}/trip-data/green_tripdata_2021-06.parquet"
    )
    proc = run_cli("prepare", "--month", "2021-06", env=env)
    assert_one_line_error(proc, "2021-06", "1-60 minutes")
    assert not any(site.paths.processed.glob("*2021-06*"))


@pytest.mark.parametrize(
    "args, needles",
    [
        (["download", "--color", "blue"], ["--color", "blue", "green"]),
        (["train", "--model", "svm"], ["--model", "svm", "xgboost"]),
        (["download", "--month", "2021-13"], ["--month", "2021-13", "YYYY-MM"]),
        (["train", "--train", "21-01"], ["--train", "21-01", "YYYY-MM"]),
        (["tune", "--trials", "0"], ["--trials 0"]),
        (["tune", "--trials", "-3"], ["--trials -3"]),
        (["tune", "--model", "linear"], ["linear", "no search space"]),
        (["tune", "--model", "bogus"], ["--model", "bogus"]),
        (["tune", "--timeout", "0"], ["--timeout 0", "positive"]),
        (["tune", "--budget-rows", "10"], ["--budget-rows 10", "at least 1000"]),
        (["tune", "--budget-rows", "-1"], ["--budget-rows -1", "give 0"]),
        (["pipeline", "--refit", "0"], ["--refit 0", "at least the best trial"]),
        (["register", "--top-n", "0"], ["--top-n 0"]),
        (["pipeline", "--baselines", "svm"], ["--baselines 'svm'", "random_forest"]),
        (["pipeline", "--baselines", "all,none"], ["--baselines 'all,none'"]),
        (["pipeline", "--max-rounds", "0"], ["--max-rounds 0"]),
        (["train", "--max-rounds", "0"], ["--max-rounds 0"]),
        (["promote", "--max-slice-loss", "-1"], ["--max-slice-loss -1"]),
        (["promote", "--min-improvement", "-0.5"], ["--min-improvement -0.5"]),
        (["monitor", "--drift-share", "1.5"], ["--drift-share=1.5", "out of range"]),
        (["cycle", "--month", "2021-04", "--window", "1"], ["--window 1", "2 to 12"]),
        (["cycle", "--month", "2021-04", "--window", "13"], ["--window 13", "2 to 12"]),
        (["cycle", "--month", "2021-04", "--min-improvement", "-0.5"], ["--min-improvement"]),
        (["cycle", "--from", "2021-05", "--to", "2021-02"], ["--from 2021-05 is after --to"]),
        (["cycle", "--month", "2021-04", "--from", "2021-05", "--to", "2021-06"], ["--from"]),
        (["cycle"], ["--month", "--from"]),
        (["cycle", "--month", "2021-04", "--trials", "0"], ["--trials 0"]),
        (["deploy", "--version", "two"], ["--version 'two'"]),
        (["deploy", "--rows", "0"], ["--rows 0"]),
    ],
)
def test_bad_flags(env, args, needles):
    """The CLI's own `main`, in this process (the real command's process is the others')."""
    assert_one_line_error(invoke(*args, env=env), *needles)


def test_a_bad_flag_in_the_real_command_is_one_line(env):
    assert_one_line_error(run_cli("tune", "--trials", "0", env=env), "--trials 0")


def test_features_not_prepared_names_the_command(env):
    proc = run_cli("tune", "--trials", "2", env=env)
    assert_one_line_error(proc, "no default features", "duration vectorize")


def test_unreachable_server_at_non_default_uri(env, site):
    proc = run_cli("promote", env=env)
    assert_one_line_error(proc, env["MLFLOW_TRACKING_URI"], "does not answer")


def test_file_store_uri_is_refused(env):
    proc = run_cli("register", env={**env, "MLFLOW_TRACKING_URI": "./mlruns"})
    assert_one_line_error(proc, "not a server address")


def test_vectorize_writes_stage_files(env, site):
    proc = run_cli("vectorize", "--features", "course", "--val", "2021-01", env=env)
    assert proc.returncode == 0, proc.stderr
    out = site.paths.features / "green-course-train-2021-01"
    assert (out / "preprocessor.b").exists() and (out / "X_2021-01.npz").exists()
    assert pd.read_parquet(site.paths.processed / "green_tripdata_2021-01.parquet").shape[0] == 4
