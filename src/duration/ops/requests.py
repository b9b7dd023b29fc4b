"""What each operation is asked to do: the requests of the pipeline and the monthly cycle,
checked before the ML stack loads (the CLI builds them from its flags, and takes its
defaults from them)."""

from __future__ import annotations

from dataclasses import dataclass

from duration.core.gate import GateRule
from duration.core.schema import COURSE, Color, FeatureSet, ModelKind, check_month
from duration.errors import DurationError
from duration.tracking.names import MODEL_NAME
from duration.training.config import SearchConfig

MAX_WINDOW = 12  # labelled months a retrain may use (all but the newest train)


@dataclass(frozen=True, kw_only=True)
class PipelineRequest:
    """What to run: the months, the feature set, the baselines, the search and the name."""

    color: Color = Color.green
    train: str = COURSE.train
    val: str = COURSE.val
    test: str = COURSE.test
    features: FeatureSet = FeatureSet.default
    name: str = MODEL_NAME
    baselines: tuple[ModelKind, ...] | None = None  # None: every one of BASELINES
    search: SearchConfig = SearchConfig()  # the pipeline always searches xgboost

    def check(self) -> None:
        """One clear line for a pipeline that cannot run as asked."""
        self.search.check()


def check_range(start: str, end: str) -> None:
    """A replay's months: both YYYY-MM, in order."""
    check_month(start, "--from")
    check_month(end, "--to")
    if start > end:
        raise DurationError(f"--from {start} is after --to {end}: give them in order")


@dataclass(frozen=True, kw_only=True)
class CycleRequest:
    """One month's cycle: what to monitor, how to retrain if needed, and the gate."""

    month: str
    color: Color = Color.green
    name: str = MODEL_NAME
    trials: int = 10
    window: int = 2
    max_rounds: int | None = None
    seed: int = 42
    features: FeatureSet = FeatureSet.default
    rule: GateRule = GateRule()

    def check(self) -> None:
        """One line for a cycle that cannot run as asked."""
        check_month(self.month)
        if not 2 <= self.window <= MAX_WINDOW:
            raise DurationError(
                f"--window {self.window}: give 2 to {MAX_WINDOW} labelled months (the older "
                "ones train, the newest validates)"
            )
        if self.trials < 1:
            raise DurationError(f"--trials {self.trials}: the search needs at least 1 trial")
        if self.rule.min_improvement < 0:
            raise DurationError(f"--min-improvement {self.rule.min_improvement}: give 0 or more")
