"""A local standalone Spark cluster (a master and one worker) on 127.0.0.1, started with
pyspark's own launch classes (`bin/spark-class`), with pid and log files under `.spark/`.
"""

from __future__ import annotations

import json
import os
import subprocess
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
from duration.spark.session import JAVA_OPTIONS, check_java, env, spark_home


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
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**env(), "SPARK_DAEMON_JAVA_OPTS": daemon},
            start_new_session=True,
        )
    (state / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _master_json(ui: str) -> dict[str, Any] | None:
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
