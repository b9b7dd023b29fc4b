"""Where a search's trials run: one after another in this process, or as Spark tasks
(hyperopt's SparkTrials), each on the cores of one task."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from duration.data import matrices
from duration.data.matrices import Inputs
from duration.settings import Settings
from duration.spark.session import check_readable, session, task_cpus
from duration.training.config import SearchBackend


@dataclass(frozen=True, kw_only=True)
class Placement:
    """How the trials' process sees the work: its settings (the data folder as executors
    mount it) and the cores each trial may use (None: this machine's)."""

    settings: Settings
    n_jobs: int | None


@contextmanager
def trials_on(
    backend: SearchBackend, inp: Inputs, parallelism: int, timeout: float | None, master: str | None
) -> Iterator[tuple[Any, Placement]]:
    """hyperopt's trials object for `backend`, and where its trials run."""
    from hyperopt import Trials  # deferred: hyperopt loads only to search

    if backend is SearchBackend.local:
        yield Trials(), Placement(settings=inp.settings, n_jobs=None)
        return
    from hyperopt import SparkTrials  # deferred: it imports pyspark

    spark = session(master or inp.settings.spark.master)
    warnings.filterwarnings("ignore", "Spark session is not provided", UserWarning)
    try:
        paths = inp.settings.paths
        mounted = (inp.settings.spark.data_dir or paths.data).resolve()
        seen = paths.model_copy(update={"data_dir": mounted})
        settings = inp.settings.model_copy(update={"paths": seen})
        stage = matrices.features_dir(settings, inp.color, inp.features, inp.train)
        check_readable(spark, stage)
        trials = SparkTrials(parallelism=parallelism, timeout=timeout, spark_session=spark)
        yield trials, Placement(settings=settings, n_jobs=task_cpus(spark))
    finally:
        spark.stop()


@contextmanager
def cancel_on(stop: threading.Event | None, trials: Any) -> Iterator[None]:
    """SparkTrials has no stop of its own but its timeout: on `stop`, its timeout becomes 0,
    so its dispatcher cancels the Spark job group of every trial in flight."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.25):
            if stop is not None and stop.is_set():
                trials.timeout = 0
                return

    watcher = threading.Thread(target=watch, daemon=True)
    if hasattr(trials, "_fmin_cancelled"):
        watcher.start()
    try:
        yield
    finally:
        done.set()
