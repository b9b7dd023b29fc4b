"""What a training job is asked to do, checked before any heavy library loads: the search's
settings and the pipeline's baselines. A bad flag is refused here in one line."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from duration.core.schema import FeatureSet, ModelKind
from duration.errors import DurationError
from duration.training.space import check_kind

# The budget: on a training month larger than BUDGET_ROWS rides, trials (and the tree
# baselines) fit on a seeded sample of BUDGET_ROWS rides and stop early on as many
# validation rides; the best REFIT trials are then refit on every ride and scored on the
# whole validation month, and only those refits log a model. A green month (~70k) is whole.
BUDGET_ROWS = 150_000
REFIT = 2

# The pipeline's baselines: (model, feature set; None = the pipeline's own set).
BASELINES: list[tuple[ModelKind, FeatureSet | None]] = [
    (ModelKind.linear, FeatureSet.course),
    (ModelKind.linear, None),
    (ModelKind.ridge, None),
    (ModelKind.random_forest, None),
    (ModelKind.xgboost, None),
]


class SearchBackend(StrEnum):
    """Where a search's trials run."""

    local = "local"  # one after another in this process, xgboost on every core
    spark = "spark"  # hyperopt's SparkTrials: each trial a Spark task


def check_rounds(max_rounds: int | None) -> None:
    """A cap on xgboost's boosting rounds must allow at least one."""
    if max_rounds is not None and max_rounds < 1:
        raise DurationError(f"--max-rounds {max_rounds}: give at least 1 boosting round")


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """How to search: which model, how many trials, the seed and the limits."""

    kind: ModelKind = ModelKind.xgboost
    trials: int = 30
    seed: int = 42
    timeout: float | None = None  # seconds; trials in flight stop at their next round
    max_rounds: int | None = None  # cap xgboost's boosting rounds
    progress: bool = True
    backend: SearchBackend = SearchBackend.local
    parallelism: int = 1  # trials at once (Spark only)
    spark_master: str | None = None  # default: the settings' (DURATION_SPARK_MASTER)
    budget_rows: int = BUDGET_ROWS  # trials fit on at most this many rides (0: every ride)
    refit: int = REFIT  # sampled trials refit on every ride, the best first

    def check(self) -> None:
        """One clear line for a search that cannot run as asked."""
        check_kind(self.kind)
        if self.trials < 1:
            raise DurationError(f"--trials {self.trials}: the search needs at least 1 trial")
        if self.timeout is not None and self.timeout <= 0:
            raise DurationError(f"--timeout {self.timeout}: give a positive number of seconds")
        check_rounds(self.max_rounds)
        if self.parallelism < 1:
            raise DurationError(f"--parallelism {self.parallelism}: give at least 1")
        if self.backend is SearchBackend.local and self.parallelism != 1:
            raise DurationError(
                f"--parallelism {self.parallelism} needs --backend spark: the local backend "
                "runs one trial at a time (on every core)"
            )
        if self.budget_rows < 0 or 0 < self.budget_rows < 1000:
            raise DurationError(
                f"--budget-rows {self.budget_rows}: give 0 (trials fit on every ride) or at "
                "least 1000 rides"
            )
        if self.refit < 1:
            raise DurationError(f"--refit {self.refit}: refit at least the best trial")


def parse_baselines(text: str) -> tuple[ModelKind, ...] | None:
    """`--baselines`: "all" (None), "none" (no baseline), or model kinds joined by commas."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    if words == ["all"]:
        return None
    if words == ["none"]:
        return ()
    kinds = {k.value for k, _ in BASELINES}
    if not words or set(words) - kinds:
        raise DurationError(
            f"--baselines {text!r}: use all, none, or some of {', '.join(sorted(kinds))} "
            "joined by commas"
        )
    return tuple(ModelKind(w) for w in dict.fromkeys(words))
