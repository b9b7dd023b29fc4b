"""Real-data fixtures for the integration tests: vectorized months, trained runs, a first
pipeline, and the CLI's environment against the session's server."""

from __future__ import annotations

import uuid

import pytest

from duration.core.schema import ModelKind
from duration.data import matrices
from duration.ops import pipeline
from duration.ops.requests import PipelineRequest
from duration.training.config import SearchConfig
from tests.helpers import cli_env as env_for

NAME = "duration-test"


@pytest.fixture(scope="session")
def vectorized(settings):
    """Both feature sets of green 2021-01 (train), 2021-02 (val) and 2021-03 (test)."""
    for fs in ("course", "default"):
        matrices.vectorize(settings, "green", fs, "2021-01", ["2021-02", "2021-03"])
    return settings


@pytest.fixture
def cli_env(settings, mlflow_server) -> dict:
    """The environment of a `duration` command against the session's server."""
    return env_for(settings, mlflow_server)


@pytest.fixture(scope="session")
def first(vectorized, mlflow_server):
    """A first pipeline on a server with no registered model (ends with v1 in Production)."""
    # every baseline but the random forest (half its time; the forest is searched in test_tune)
    kinds = (ModelKind.linear, ModelKind.ridge, ModelKind.xgboost)
    req = PipelineRequest(
        name=NAME,
        baselines=kinds,
        search=SearchConfig(trials=2, seed=1, max_rounds=20, progress=False),
    )
    return pipeline.run(vectorized, req)


@pytest.fixture(scope="session")
def course_linear(vectorized, mlflow_server):
    """The course's linear baseline (green 2021-01, course features), trained once."""
    from duration.training import train

    inp = matrices.load_inputs(vectorized, "green", "course", "2021-01", "2021-02")
    return train.train_run(inp, "linear")


@pytest.fixture
def weak(course_linear) -> str:
    """A model of its own whose Production v1 is the course's linear baseline (trained on
    2021-01, no reference profile yet): any searched xgboost beats it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    name = f"cycle-{uuid.uuid4().hex[:8]}"
    client = MlflowClient()
    mv = mlflow.register_model(course_linear.model_uri, name)
    tags = {
        "color": "green",
        "train_month": "2021-01",
        "test_rmse": f"{course_linear.val_rmse:.6f}",
    }
    for k, v in tags.items():
        client.set_model_version_tag(name, mv.version, k, v)
    client.transition_model_version_stage(name, mv.version, "Production")
    client.set_registered_model_alias(name, "production", mv.version)
    return name
