"""The search on Spark: local mode, a real standalone master and worker, interrupts, and the
bad-input lines. Every trial is a real Spark task running the venv's Python."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from duration.data import matrices
from duration.errors import DurationError
from duration.infra.net import free_port
from duration.settings import Paths, Settings, Spark
from duration.spark import cluster, session
from duration.training import search as tune
from duration.training.config import SearchBackend, SearchConfig
from tests.helpers import assert_one_line_error, children, invoke

# Under pytest-xdist (`make test`: -n 2 --dist loadgroup) this module runs on one worker, so
# this process starts its Spark JVM once and its later sessions reuse it.
pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark")]


@pytest.fixture(scope="module")
def inputs(vectorized, mlflow_server):
    return matrices.load_inputs(vectorized, "green", "default", "2021-01", "2021-02")


def search(inputs, **kw):
    return tune.search(inputs, SearchConfig(progress=False, **kw))


def running(parent_id: str) -> list:
    return [k for k in children(parent_id) if k.info.status == "RUNNING"]


def assert_spark_search(r, trials: int, rounds: int, parallelism: int) -> None:
    """Every trial finished as a child run, in a Spark Python worker, on one core."""
    assert r.status == "FINISHED" and r.completed == trials
    kids = children(r.parent_run_id)
    assert [k.info.status for k in kids] == ["FINISHED"] * trials
    assert sorted(k.data.tags["trial"] for k in kids) == [str(n) for n in range(1, trials + 1)]
    for kid in kids:
        assert kid.data.params["n_estimators"] == str(rounds)
        assert 4 < kid.data.metrics["val_rmse"] < 10
        assert kid.data.tags["pid"] != str(os.getpid())  # it ran in a Spark Python worker
        assert kid.data.params["n_jobs"] == "1"  # spark.task.cpus, not os.cpu_count()
    parent = MlflowClient().get_run(r.parent_run_id)
    assert parent.data.params["backend"] == "spark"
    assert parent.data.params["parallelism"] == str(parallelism)
    assert parent.data.metrics["best_val_rmse"] == pytest.approx(r.best_val_rmse)


def test_parallelism_one_on_spark_equals_the_local_backend(inputs):
    local = search(inputs, trials=2, seed=9, max_rounds=8)
    remote = search(
        inputs,
        trials=2,
        seed=9,
        max_rounds=8,
        backend=SearchBackend.spark,
        parallelism=1,
        spark_master="local[1]",
    )
    assert_spark_search(remote, trials=2, rounds=8, parallelism=1)
    assert remote.history == pytest.approx(local.history, abs=1e-4)
    strip = {"seed", "n_jobs"}
    pl = [
        {k: v for k, v in c.data.params.items() if k not in strip}
        for c in children(local.parent_run_id)
    ]
    pr = [
        {k: v for k, v in c.data.params.items() if k not in strip}
        for c in children(remote.parent_run_id)
    ]
    assert pl == pr


def _listening(pids: list[int]) -> set[str]:
    addresses = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            addresses.add(conn.laddr.ip)
    return addresses


def test_a_standalone_master_and_worker_on_loopback(inputs, tmp_path):
    settings = Settings(
        paths=Paths(home=tmp_path),
        spark=Spark(
            master_port=free_port(), master_ui_port=free_port(), worker_ui_port=free_port()
        ),
    )
    local = cluster.start_cluster(settings, cores=2)
    try:
        pids = [
            int((settings.paths.spark_state / f"{n}.pid").read_text()) for n in ("master", "worker")
        ]
        r = search(
            inputs,
            trials=2,
            seed=3,
            max_rounds=5,
            backend=SearchBackend.spark,
            parallelism=2,
            spark_master=local.master_url,
        )
        assert_spark_search(r, trials=2, rounds=5, parallelism=2)
        tree = [
            p for pid in pids for p in [psutil.Process(pid), *psutil.Process(pid).children(True)]
        ]
        addresses = _listening([p.pid for p in tree])
        assert addresses and addresses <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses
        # the master's and worker's JVMs run with the quick compiler only (as do the driver's)
        jvms = [p.cmdline() for p in tree if p.name() == "java"]
        assert len(jvms) >= 2 and all(session.JAVA_OPTIONS in cmd for cmd in jvms), jvms
        driver = [p.cmdline() for p in psutil.Process().children(True) if p.name() == "java"]
        assert driver and all(session.JAVA_OPTIONS in cmd for cmd in driver), driver
    finally:
        assert cluster.stop_cluster(settings) == ["worker", "master"]
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_ctrl_c_during_a_spark_search_leaves_no_running_run(vectorized, cli_env, tmp_path):
    summary = tmp_path / "s.json"
    args = ["tune", "--backend", "spark", "--parallelism", "2", "--spark-master", "local[2]"]
    args += ["--trials", "30", "--seed", "4", "--max-rounds", "400", "--summary", str(summary)]
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("duration")), *args],
        env={**os.environ, **cli_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client, deadline = MlflowClient(), time.monotonic() + 240
    parent = None
    while time.monotonic() < deadline and parent is None:  # until a trial is in flight
        exps = [e.experiment_id for e in client.search_experiments()]
        for p in client.search_runs(
            exps, "attributes.status = 'RUNNING' and tags.search = 'hyperopt-tpe'"
        ):
            if p.data.params.get("backend") == "spark" and running(p.info.run_id):
                parent = p.info.run_id
        time.sleep(0.5)
    assert parent, "no Spark trial started"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130 and "Traceback" not in err, err
    data = json.loads(summary.read_text())
    assert data["status"] == "KILLED" and data["parent_run_id"] == parent
    assert client.get_run(parent).info.status == "KILLED"
    assert running(parent) == []
    assert "KILLED" in {k.info.status for k in children(parent)}


def test_executors_that_cannot_read_the_data_are_one_line(inputs, tmp_path):
    elsewhere = inputs.settings.but(spark={"data_dir": tmp_path / "not-shared"})
    with pytest.raises(DurationError, match="executors cannot read the feature stage"):
        search(
            replace(inputs, settings=elsewhere),
            trials=1,
            backend=SearchBackend.spark,
            spark_master="local[1]",
        )


@pytest.mark.parametrize(
    "args, env, needles",
    [
        (["--parallelism", "0"], {}, ["--parallelism 0"]),
        (["--parallelism", "2"], {}, ["--parallelism 2", "--backend spark"]),
        (["--backend", "hadoop"], {}, ["--backend", "hadoop"]),
        (
            ["--backend", "spark", "--spark-master", "spark://127.0.0.1:{port}"],
            {},
            ["spark://127.0.0.1:", "does not answer", "make spark-up"],
        ),
        (
            ["--backend", "spark"],
            {"JAVA_HOME": None, "PATH": str(Path(sys.executable).parent)},
            ["Java", "openjdk-17-jre-headless"],
        ),
    ],
)
def test_bad_spark_input(vectorized, cli_env, args, env, needles):
    args = [a.format(port=free_port()) for a in args]
    proc = invoke("tune", "--trials", "2", *args, env={**cli_env, **env})
    assert_one_line_error(proc, *needles)


def test_without_pyspark_the_line_says_how_to_install(tmp_path):
    code = (
        "import sys; sys.modules['pyspark'] = None; from duration.cli import main; "
        "sys.exit(main(['tune', '--backend', 'spark', '--trials', '1']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert_one_line_error(proc, "pyspark", "make install")
