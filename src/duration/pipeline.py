"""The whole pipeline, wired from the stage functions: no logic of its own."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from duration import features, registry, train, tune
from duration.config import MODEL_NAME, Color, FeatureSet, ModelKind, Settings

# (model, feature set) baselines: the course's own setup first, then each model on the
# chosen features.
BASELINES = [
    (ModelKind.linear, FeatureSet.course),
    (ModelKind.linear, None),
    (ModelKind.ridge, None),
    (ModelKind.random_forest, None),
    (ModelKind.xgboost, None),
]


@dataclass
class PipelineResult:
    """Everything the pipeline produced, for its table and summary."""

    baselines: list[dict] = field(default_factory=list)
    search: dict = field(default_factory=dict)
    registered: dict = field(default_factory=dict)
    decision: dict = field(default_factory=dict)
    wall_s: float = 0.0

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
        }


def run(
    settings: Settings,
    color: Color | str = Color.green,
    train_month: str = "2021-01",
    val: str = "2021-02",
    test: str = "2021-03",
    fs: FeatureSet | str = FeatureSet.default,
    trials: int = 30,
    seed: int = 42,
    name: str = MODEL_NAME,
    max_rounds: int | None = None,
    progress: bool = True,
) -> PipelineResult:
    """download -> prepare -> vectorize -> baselines -> tune -> register -> promote."""
    start = time.monotonic()
    fs = FeatureSet(fs)
    result = PipelineResult()
    for feature_set in dict.fromkeys([FeatureSet.course, fs]):
        features.vectorize(settings, color, feature_set, train_month, [val, test])
    groups: dict[FeatureSet, list[ModelKind]] = {}
    for kind, feature_set in BASELINES:
        groups.setdefault(feature_set or fs, []).append(kind)
    groups[fs] = groups.pop(fs)  # the chosen set last: its matrices stay for the search
    for feature_set, kinds in groups.items():
        inp = None  # one feature set's matrices in memory at a time (3M-ride months are big)
        inp = train.load_inputs(settings, color, feature_set, train_month, val)
        for kind in kinds:
            params = train.round_cap(kind, max_rounds)
            r = train.train_run(
                settings, kind, inp.features, color, train_month, val, params, seed, inputs=inp
            )
            result.baselines.append(asdict(r))
    found = tune.search(
        inp, ModelKind.xgboost, trials, seed, max_rounds=max_rounds, progress=progress
    )
    result.search = asdict(found)
    del inp  # registering reads the test month; the training matrices are no longer needed
    result.registered = asdict(registry.register(settings, test, name))
    result.decision = asdict(registry.promote(settings, name))
    result.wall_s = time.monotonic() - start
    return result
