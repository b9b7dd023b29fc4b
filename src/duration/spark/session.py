"""A Spark session for hyperopt's SparkTrials whose driver and executors stay on 127.0.0.1,
and the checks before one starts: Java, pyspark, an answering master."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from duration.errors import DurationError
from duration.infra.net import LOOPBACK

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


def env() -> dict[str, str]:
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
    os.environ.update({k: v for k, v in env().items() if k != "SPARK_HOME"})
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
