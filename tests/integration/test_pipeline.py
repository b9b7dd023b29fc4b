"""The pipeline's own run: a stopped pipeline ends it KILLED, with the stages it ran."""

from __future__ import annotations

import threading
import uuid

from mlflow.tracking import MlflowClient

from duration.ops import pipeline
from duration.ops.specs import PipelineRequest
from duration.training.config import SearchConfig


def test_a_stopped_pipeline_ends_its_run_killed_with_the_stages_it_ran(vectorized, mlflow_server):
    stop = threading.Event()
    stop.set()  # as if Ctrl-C came before the search's first trial
    name = f"stopped-{uuid.uuid4().hex[:8]}"
    req = PipelineRequest(
        name=name, baselines=(), search=SearchConfig(trials=5, seed=1, max_rounds=5, progress=False)
    )
    r = pipeline.run(vectorized, req, stop)
    assert r.stopped and not r.registered
    assert list(r.timings) == ["download", "prepare", "vectorize", "load default", "search"]
    run = MlflowClient().get_run(r.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["search_run_id"] == r.search["parent_run_id"]
    assert "model_version" not in run.data.tags
    assert run.data.metrics["pipeline_s"] >= run.data.metrics["seconds_search"]
    assert MlflowClient().search_registered_models(f"name = '{name}'") == []
