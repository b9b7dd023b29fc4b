"""The whole pipeline, wired from the stage functions: no logic of its own.

download -> prepare -> vectorize -> baselines -> search -> register -> promote, each stage
timed on the pipeline's parent run. A promotion moves the `production` alias; when something
serves here, the pipeline waits for serving to follow it (the deployer, or itself).
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from duration.core.schema import FeatureSet, ModelKind
from duration.data import matrices, prepare, tlc
from duration.infra.resources import Stopwatch
from duration.ops import converge
from duration.ops.specs import PipelineRequest
from duration.registry.promote import promote
from duration.registry.register import register
from duration.serving import service
from duration.settings import Settings
from duration.tracking import experiments, runs
from duration.tracking.client import client
from duration.tracking.names import EXPERIMENT
from duration.training import estimators, train
from duration.training.config import BASELINES
from duration.training.search import search


@dataclass
class PipelineResult:
    """Everything the pipeline produced, for its table and summary."""

    baselines: list[dict] = field(default_factory=list)
    search: dict = field(default_factory=dict)
    registered: dict = field(default_factory=dict)
    decision: dict = field(default_factory=dict)
    deployment: list[dict] = field(default_factory=list)  # serving following the promotion
    wall_s: float = 0.0
    timings: dict = field(default_factory=dict)  # stage -> seconds and peak RSS (MB)
    run_id: str = ""  # the pipeline's parent run (the baselines are its children)

    @property
    def stopped(self) -> bool:
        """True when the search was interrupted or timed out (nothing was registered)."""
        return self.search.get("status") == "KILLED"

    def summary(self) -> dict:
        """The `--summary` JSON."""
        return {
            "best_val_rmse": self.search.get("best_val_rmse"),
            "test_rmse": self.registered.get("test_rmse"),
            "model_name": self.registered.get("model_name"),
            "model_version": self.registered.get("model_version"),
            "stage": "Production"
            if self.decision.get("production") == self.registered.get("model_version")
            else "Staging",
            "production_version": self.decision.get("production"),
            "wall_s": self.wall_s,
            "timings": self.timings,
            "pipeline_run_id": self.run_id,
            "baselines": self.baselines,
            "search": self.search,
            "registered": self.registered,
            "decision": self.decision,
            "deployment": self.deployment,
        }


def baseline_groups(req: PipelineRequest) -> dict[FeatureSet, list[ModelKind]]:
    """The baselines to train, by feature set; the chosen set last (kept for the search)."""
    groups: dict[FeatureSet, list[ModelKind]] = {}
    for kind, feature_set in BASELINES:
        if req.baselines is None or kind in req.baselines:
            groups.setdefault(feature_set or req.features, []).append(kind)
    groups[req.features] = groups.pop(req.features, [])
    return groups


def _baselines(
    settings: Settings, req: PipelineRequest, result: PipelineResult, watch: Stopwatch
) -> matrices.Inputs | None:
    """Train the baselines, one feature set's matrices in memory at a time; return the
    chosen set's inputs (the search uses them)."""
    inp = None
    for feature_set, kinds in baseline_groups(req).items():
        inp = None  # free the previous set's matrices first (3M-ride months are big)
        with watch.stage(f"load {feature_set.value}"):
            inp = matrices.load_inputs(settings, req.color, feature_set, req.train, req.val)
        for kind in kinds:
            with watch.stage(f"baseline {kind.value} {feature_set.value}"):
                cap = estimators.round_cap(kind, req.search.max_rounds)
                r = train.train_run(
                    inp, kind, cap, req.search.seed, budget_rows=req.search.budget_rows
                )
            result.baselines.append(asdict(r))
            client().set_tag(r.run_id, "mlflow.parentRunId", result.run_id)
    return inp


def _data(settings: Settings, req: PipelineRequest, watch: Stopwatch) -> None:
    """Download, prepare and vectorize the months, each a timed stage."""
    months = list(dict.fromkeys([req.train, req.val, req.test]))
    with watch.stage("download"):
        for month in months:
            tlc.download(settings, req.color, month, progress=req.search.progress)
    with watch.stage("prepare"):
        for month in months:
            prepare.prepare(settings, req.color, month)
    with watch.stage("vectorize"):
        for feature_set in baseline_groups(req):
            matrices.vectorize(settings, req.color, feature_set, req.train, [req.val, req.test])


def run(
    settings: Settings, req: PipelineRequest, stop: threading.Event | None = None
) -> PipelineResult:
    """download -> prepare -> vectorize -> baselines -> search -> register -> promote.

    A stopped search (`stop` set, or Ctrl-C) ends the pipeline before registering.
    """
    start = time.monotonic()
    result, watch = PipelineResult(), Stopwatch()
    with _pipeline_run(req, result, watch, start):
        _data(settings, req, watch)
        inp = _baselines(settings, req, result, watch)
        assert inp is not None  # the chosen feature set is always loaded last
        with watch.stage("search"):
            found = search(inp, req.search, stop)
        result.search = asdict(found)
        del inp  # registering reads the test month; the training matrices are not needed
        if not result.stopped:
            with watch.stage("register"):
                registered = register(
                    settings, req.test, req.name, parent_run_id=found.parent_run_id
                )
            result.registered = asdict(registered)
            with watch.stage("promote"):
                result.decision = asdict(promote(settings, req.name))
            if result.decision["promoted"] and service.running(settings):
                with watch.stage("deploy"):  # the alias moved: serving follows it
                    done = converge.follow(settings, req.name, wait=600, say=lambda _: None)
                    result.deployment = [{**asdict(d), "said": d.said()} for d in done]
    return result


@contextmanager
def _pipeline_run(
    req: PipelineRequest, result: PipelineResult, watch: Stopwatch, start: float
) -> Iterator[None]:
    """The pipeline's parent run: the baselines nest under it, and it ends with every
    stage's time and peak memory (metrics, and `timings.json`), whatever the outcome."""
    exp = experiments.experiment_id(EXPERIMENT)
    tags = {
        "mlflow.runName": f"pipeline-{req.color.value}-{req.train}",
        "pipeline": "true",
        "color": req.color.value,
        "train_month": req.train,
        "val_month": req.val,
        "test_month": req.test,
        **runs.process_tags(),
    }
    result.run_id = client().create_run(exp, tags=tags).info.run_id

    def finish(status: str) -> None:
        result.wall_s = time.monotonic() - start
        result.timings = watch.as_dict()
        _log_timings(result, "KILLED" if result.stopped else status)

    with runs.ended(finish):
        yield


def _log_timings(result: PipelineResult, status: str) -> None:
    """Every stage's seconds and peak RSS, the links to what the pipeline made, its status."""
    from mlflow.entities import Metric  # deferred: MLflow takes seconds to import

    c, now = client(), int(time.time() * 1000)
    metrics = [Metric("pipeline_s", result.wall_s, now, 0)]
    for name, t in result.timings.items():
        key = name.replace(" ", "_")
        metrics += [
            Metric(f"seconds_{key}", t["seconds"], now, 0),
            Metric(f"peak_rss_mb_{key}", t["peak_rss_mb"], now, 0),
        ]
    c.log_batch(result.run_id, metrics=metrics)
    if result.search:
        c.set_tag(result.run_id, "search_run_id", result.search["parent_run_id"])
    if result.registered:
        c.set_tag(result.run_id, "model_version", result.registered["model_version"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "timings.json"
        path.write_text(json.dumps(result.timings, indent=1))
        c.log_artifact(result.run_id, str(path))
    c.set_terminated(result.run_id, status)
