"""Real-data fixtures for model tests: vectorized months and a CLI environment."""

from __future__ import annotations

import os

import pytest

from duration import matrices, pipeline

NAME = "duration-test"


@pytest.fixture(scope="session")
def vectorized(settings):
    """Both feature sets of green 2021-01 (train), 2021-02 (val) and 2021-03 (test)."""
    for fs in ("course", "default"):
        matrices.vectorize(settings, "green", fs, "2021-01", ["2021-02", "2021-03"])
    return settings


@pytest.fixture
def cli_env(settings, mlflow_server):
    return {
        "DURATION_DATA_DIR": str(settings.data_dir),
        "DURATION_TLC_URL": settings.tlc_url,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "PATH": os.environ["PATH"],
    }


@pytest.fixture(scope="session")
def first(vectorized, mlflow_server):
    """A first pipeline on a server with no registered model (ends with v1 in Production)."""
    req = pipeline.PipelineRequest(trials=2, seed=1, name=NAME, max_rounds=20, progress=False)
    return pipeline.run(vectorized, req)
