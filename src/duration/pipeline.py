"""The whole pipeline, wired from the stage functions: no logic of its own."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field

from duration import estimators, matrices, registry, train, tune
from duration.config import BASELINES, MODEL_NAME, Color, FeatureSet, ModelKind, Settings
from duration.errors import DurationError

# (model, feature set) baselines: the course's own setup first, then each model on the
# chosen features.


@dataclass(frozen=True)
class PipelineRequest:
    """What to run: the months, the feature set, the search and the registered name."""

    color: Color = Color.green
    train: str = "2021-01"
    val: str = "2021-02"
    test: str = "2021-03"
    features: FeatureSet = FeatureSet.default
    trials: int = 30
    seed: int = 42
    name: str = MODEL_NAME
    max_rounds: int | None = None
    progress: bool = True
    backend: str = "local"
    parallelism: int = 1
    spark_master: str | None = None
    baselines: tuple[ModelKind, ...] | None = None  # None: every one of BASELINES

    def search_config(self) -> tune.SearchConfig:
        """The search this pipeline runs."""
        return tune.SearchConfig(
            ModelKind.xgboost,
            self.trials,
            self.seed,
            max_rounds=self.max_rounds,
            progress=self.progress,
            backend=self.backend,
            parallelism=self.parallelism,
            spark_master=self.spark_master,
        )


@dataclass
class PipelineResult:
    """Everything the pipeline produced, for its table and summary."""

    baselines: list[dict] = field(default_factory=list)
    search: dict = field(default_factory=dict)
    registered: dict = field(default_factory=dict)
    decision: dict = field(default_factory=dict)
    deployment: dict = field(default_factory=dict)
    wall_s: float = 0.0

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


def _baselines(settings: Settings, req: PipelineRequest, result: PipelineResult):
    """Train the baselines, one feature set's matrices in memory at a time; return the
    chosen set's inputs (the search uses them)."""
    groups = baseline_groups(req)
    inp = None
    for feature_set, kinds in groups.items():
        inp = None  # free the previous set's matrices first (3M-ride months are big)
        inp = matrices.load_inputs(settings, req.color, feature_set, req.train, req.val)
        for kind in kinds:
            r = train.train_run(inp, kind, estimators.round_cap(kind, req.max_rounds), req.seed)
            result.baselines.append(asdict(r))
    return inp


def run(
    settings: Settings, req: PipelineRequest, stop: threading.Event | None = None
) -> PipelineResult:
    """download -> prepare -> vectorize -> baselines -> tune -> register -> promote.

    A stopped search (`stop` set, or Ctrl-C) ends the pipeline before registering.
    """
    start = time.monotonic()
    result = PipelineResult()
    for feature_set in baseline_groups(req):
        matrices.vectorize(settings, req.color, feature_set, req.train, [req.val, req.test])
    inp = _baselines(settings, req, result)
    found = tune.search(inp, req.search_config(), stop)
    result.search = asdict(found)
    del inp  # registering reads the test month; the training matrices are no longer needed
    if not result.stopped:
        registered = registry.register(
            settings, req.test, req.name, parent_run_id=found.parent_run_id
        )
        result.registered = asdict(registered)
        result.decision = asdict(registry.promote(settings, req.name))
        if result.decision["promoted"]:
            result.deployment = deploy_if_serving(settings, req.name)
    result.wall_s = time.monotonic() - start
    return result


def deploy_if_serving(settings: Settings, name: str) -> dict:
    """After a promotion: deploy the new Production version if a serving process runs.

    Returns the deployment (empty when nothing serves); a failed deploy is reported in it,
    and the old version keeps serving.
    """
    from duration import deploy, serve

    if serve.read_state(settings) is None or serve.proxy_pid(settings) is None:
        return {}
    try:
        return asdict(deploy.deploy(settings, name, wait=600))
    except DurationError as e:
        return {"outcome": "failed", "reason": str(e)}
