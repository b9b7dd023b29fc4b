"""Real-data fixtures for the integration tests: vectorized months, trained runs, a first
pipeline, the CLI's environment against the session's server, and a serving home."""

from __future__ import annotations

import os
import uuid

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from duration.core.schema import ModelKind
from duration.data import matrices
from duration.deployer import life
from duration.infra.net import free_port
from duration.infra.nginx import binary as nginx_binary
from duration.ops import pipeline
from duration.ops.specs import PipelineRequest
from duration.registry import uris
from duration.serving import service
from duration.settings import Automate, Paths, Serve, Settings, Tracking
from duration.training import estimators, train
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
    inp = matrices.load_inputs(vectorized, "green", "course", "2021-01", "2021-02")
    return train.train_run(inp, "linear")


@pytest.fixture
def weak(course_linear) -> str:
    """A model of its own whose Production v1 is the course's linear baseline (trained on
    2021-01, no reference profile yet): any searched xgboost beats it."""

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


@pytest.fixture(scope="session")
def nginx() -> str:
    """The nginx binary; skips where it is absent (fails under CI: `make install` adds it)."""
    try:
        return nginx_binary()
    except Exception as e:  # noqa: BLE001
        if os.environ.get("CI") == "true":
            pytest.fail(f"{e}; CI must have it (make install)")
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def trained(vectorized, mlflow_server) -> list[str]:
    """Two trained runs to serve: xgboost (30 rounds) and the linear baseline. Trained here,
    not taken from the first pipeline, so these tests need not wait for it."""
    inp = matrices.load_inputs(vectorized, "green", "default", "2021-01", "2021-02")
    runs = [
        train.train_run(inp, ModelKind.xgboost, estimators.round_cap(ModelKind.xgboost, 30), 1),
        train.train_run(inp, ModelKind.linear, None, 1),
    ]
    return [r.run_id for r in runs]


@pytest.fixture
def name(trained) -> str:
    """A model of this test's own: v1 xgboost (Production), v2 the linear baseline."""
    name = f"serve-{uuid.uuid4().hex[:8]}"
    sources = trained
    client = MlflowClient()
    for run_id in sources:
        uri = client.get_run(run_id).data.tags["model_uri"]
        mv = mlflow.register_model(uri, name)
        client.set_model_version_tag(name, mv.version, "color", "green")
    uris.move(name, "1", "Production")
    return name


@pytest.fixture
def home(tmp_path, vectorized, mlflow_server, nginx):
    """Settings with serving state under this test's folder and a free serving port."""
    s = Settings(
        paths=Paths(
            home=tmp_path, data_dir=vectorized.paths.data, tlc_url=vectorized.paths.tlc_url
        ),
        tracking=Tracking(uri=mlflow_server),
        serve=Serve(port=free_port()),
        automate=Automate(hook_port=free_port()),
    )
    yield s
    life.stop(s)
    service.stop(s)
