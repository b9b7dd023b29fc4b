"""Spark for the search: a session for hyperopt's SparkTrials, and a standalone cluster
(master and one worker) on this machine, bound to 127.0.0.1.

The cluster is started with pyspark's own launch classes (`bin/spark-class`), with pid and
log files under `.spark/` beside the tracking server's state.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duration.errors import DurationError
from duration.infra.net import LOOPBACK
from duration.infra.proc import stop_group
from duration.settings import Settings

JAVA_PACKAGE = "openjdk-17-jre-headless"
# The JVMs here only schedule Python tasks, so the quick (C1) compiler alone is enough: it
# nearly halves their CPU (a local session and five small jobs: 21.1 s -> 12.4 s, measured here).
# Prepended to the driver's and executors' options, and to SPARK_DAEMON_JAVA_OPTS for the
# master and worker: options of the user's own still come after, and win.
JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"


def check_java() -> str:
    """The `java` on PATH (or under JAVA_HOME), or one line naming the package to install."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise DurationError(
            f"--backend spark needs Java 17, which is not installed: "
            f"`apt-get install {JAVA_PACKAGE}` (or set JAVA_HOME)"
        )
    return java


def spark_home() -> Path:
    """pyspark's own folder (its jars and bin/spark-class), or one line on how to install it."""
    try:
        import pyspark  # deferred: the spark extra may not be installed
    except ImportError as e:
        raise DurationError(
            "--backend spark needs pyspark, which is not installed: "
            "run `make install` (or `.venv/bin/pip install -e '.[spark]'`)"
        ) from e
    return Path(pyspark.__file__).parent


def _env() -> dict[str, str]:
    """Environment for Spark's JVMs and Python workers: loopback only, the venv's Python."""
    return {
        **os.environ,
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": LOOPBACK,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }


def check_master(master: str, timeout: float = 5.0) -> None:
    """A `spark://host:port` master must accept connections; `local[...]` always does."""
    if master.startswith("local"):
        return
    if not master.startswith("spark://"):
        raise DurationError(
            f"--spark-master {master!r} is not a Spark master: use local[*] or spark://host:port"
        )
    host, _, port = master.removeprefix("spark://").partition(":")
    try:
        with socket.create_connection((host, int(port or 7077)), timeout=timeout):
            return
    except (OSError, ValueError) as e:
        raise DurationError(
            f"the Spark master at {master} does not answer ({e}): start one with "
            "`make spark-up`, or pass another --spark-master"
        ) from e


def preflight(master: str) -> None:
    """Java, pyspark and an answering master, each refused in one line if missing."""
    check_java()
    spark_home()
    check_master(master)


def session(master: str, app: str = "duration-search") -> Any:
    """A SparkSession whose driver, block manager and executors stay on 127.0.0.1."""
    preflight(master)
    os.environ.update({k: v for k, v in _env().items() if k != "SPARK_HOME"})
    from pyspark.sql import SparkSession  # deferred: the JVM bridge is heavy

    # SparkContext replaces the SIGINT handler with one that raises KeyboardInterrupt; keep
    # the caller's (the CLI's clean stop) in place
    handler = signal.getsignal(signal.SIGINT)
    try:
        return _builder(SparkSession.builder.master(master), app).getOrCreate()
    finally:
        if threading.current_thread() is threading.main_thread() and handler is not None:
            signal.signal(signal.SIGINT, handler)


def _builder(builder: Any, app: str) -> Any:
    return (
        builder.appName(app)
        .config("spark.driver.bindAddress", LOOPBACK)
        .config("spark.driver.host", LOOPBACK)
        .config("spark.ui.enabled", "false")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
        .config("spark.task.cpus", "1")
        .config("spark.driver.defaultJavaOptions", JAVA_OPTIONS)
        .config("spark.executor.defaultJavaOptions", JAVA_OPTIONS)
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.log.level", "ERROR")
    )


def task_cpus(spark: Any) -> int:
    """Cores per Spark task: what one trial's xgboost may use."""
    return int(spark.sparkContext.getConf().get("spark.task.cpus", "1"))


def check_readable(spark: Any, path: Path) -> None:
    """Executors must see the feature stage folder (shared storage on a real cluster)."""
    target = str(path)
    seen = spark.sparkContext.parallelize([0], 1).map(lambda _: os.path.isdir(target)).collect()
    if not all(seen):
        raise DurationError(
            f"Spark executors cannot read the feature stage at {target}: put the data folder "
            "on storage every worker mounts at the same path, and point "
            "DURATION_SPARK_DATA_DIR at it"
        )


# --------------------------------------------------------------------------- the cluster


@dataclass(frozen=True, kw_only=True)
class Cluster:
    """Where a local standalone master and worker listen."""

    master_url: str
    master_ui: str
    worker_ui: str


def _spark_class(*args: str) -> list[str]:
    return [str(spark_home() / "bin" / "spark-class"), *args]


def _launch(cmd: list[str], state: Path, name: str) -> int:
    state.mkdir(parents=True, exist_ok=True)
    daemon = f"{JAVA_OPTIONS} {os.environ.get('SPARK_DAEMON_JAVA_OPTS', '')}".strip()
    with open(state / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**_env(), "SPARK_DAEMON_JAVA_OPTS": daemon}, start_new_session=True,
        )  # fmt: skip
    (state / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _master_json(ui: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{ui}/json/", timeout=2) as r:  # noqa: S310 - loopback
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def _wait(what: str, ready: Callable[[], bool], state: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise DurationError(
                f"the Spark {what} did not start within {timeout:.0f} s: see {state}/{what}.log"
            )
        time.sleep(0.5)


def start_cluster(settings: Settings, cores: int = 2, timeout: float = 120.0) -> Cluster:
    """Start a standalone master and one worker on 127.0.0.1; wait until the worker is ALIVE."""
    check_java()
    state, sp = settings.paths.spark_state, settings.spark
    ui = f"http://{LOOPBACK}:{sp.master_ui_port}"
    cluster = Cluster(
        master_url=f"spark://{LOOPBACK}:{sp.master_port}",
        master_ui=ui,
        worker_ui=f"http://{LOOPBACK}:{sp.worker_ui_port}",
    )
    if _master_json(ui) is not None:
        return cluster  # already up
    _launch(
        _spark_class(
            "org.apache.spark.deploy.master.Master",
            *("--host", LOOPBACK, "--port", str(sp.master_port)),
            *("--webui-port", str(sp.master_ui_port)),
        ),
        state,
        "master",
    )
    _wait("master", lambda: _master_json(ui) is not None, state, timeout)
    _launch(
        _spark_class(
            "org.apache.spark.deploy.worker.Worker",
            cluster.master_url,
            *("--host", LOOPBACK, "--cores", str(cores), "--memory", "4g"),
            *("--webui-port", str(sp.worker_ui_port)),
            *("--work-dir", str((state / "work").resolve())),
        ),
        state,
        "worker",
    )

    def alive() -> bool:
        workers = (_master_json(ui) or {}).get("workers", [])
        return any(w.get("state") == "ALIVE" for w in workers)

    _wait("worker", alive, state, timeout)
    return cluster


def stop_cluster(settings: Settings) -> list[str]:
    """Stop the worker, then the master (whole process groups); return what was stopped."""
    stopped = []
    for name in ("worker", "master"):
        pid_file = settings.paths.spark_state / f"{name}.pid"
        if pid_file.exists():
            stop_group(int(pid_file.read_text()))
            pid_file.unlink()
            stopped.append(name)
    return stopped
