"""What each operation is asked to do: the requests of the pipeline and the monthly cycle,
checked before the ML stack loads (the CLI builds them from its flags, and takes its
defaults from them)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from duration.core.gate import GateRule
from duration.core.schema import COURSE, Color, FeatureSet, ModelKind, check_month
from duration.errors import DurationError
from duration.serving.state import Role
from duration.tracking.names import MODEL_NAME
from duration.training.config import SearchConfig

AWAITING_APPROVAL = "awaiting-approval"  # a cycle's action, in manual approval mode
MAX_WINDOW = 12  # labelled months a retrain may use (all but the newest train)


class LiveMode(StrEnum):
    """How the cycle's challenger meets live traffic."""

    off = "off"  # promoted on the offline gate alone
    shadow = "shadow"  # put beside Production as a shadow, decided next month
    canary = "canary"  # put beside Production as a canary, decided next month


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
    trials: int = 10  # the defaults are the settings' (DURATION_CYCLE_TRIALS, ...)
    window: int = 2
    max_rounds: int | None = None
    seed: int = 42
    features: FeatureSet = FeatureSet.default
    rule: GateRule = GateRule()
    live: str = LiveMode.off.value  # a LiveMode, checked by `check`
    live_weight: int = 20  # the canary's share of clients, %
    hold: bool = False  # manual approval: a promotion or a finish waits for a person
    data_digest: str = ""  # the TLC file's digest, when the orchestrator asks (recorded)
    redecide: bool = False  # the month was re-published: decide it again for its new data

    @property
    def role(self) -> Role | None:
        """The arm a challenger is put live as, or None (off)."""
        return None if self.live == LiveMode.off else Role(self.live)

    def check(self) -> None:
        """One line for a cycle that cannot run as asked."""
        check_month(self.month)
        if self.live not in set(LiveMode):
            raise DurationError(
                f"--live {self.live!r} (or DURATION_CYCLE_LIVE): give off (promote on the "
                "offline gate), shadow or canary"
            )
        if self.live == "canary" and not 1 <= self.live_weight <= 99:
            raise DurationError(f"--live-weight {self.live_weight}: give 1-99 (% of clients)")
        if not 2 <= self.window <= MAX_WINDOW:
            raise DurationError(
                f"--window {self.window}: give 2 to {MAX_WINDOW} labelled months (the older "
                "ones train, the newest validates)"
            )
        if self.trials < 1:
            raise DurationError(f"--trials {self.trials}: the search needs at least 1 trial")
        if self.rule.min_improvement < 0:
            raise DurationError(f"--min-improvement {self.rule.min_improvement}: give 0 or more")


def check_weight(weight: int) -> None:
    """A canary's share of clients: 1-99 %."""
    if not 1 <= weight <= 99:
        raise DurationError(
            f"--weight {weight}: give the canary's share of clients, 1-99 (%); "
            "a shadow takes no weight, and --finish gives it everything"
        )


@dataclass(frozen=True, kw_only=True)
class ServingChange:
    """The one change to serving a `duration deploy` asks for."""

    version: str | None = None  # make it Production and serve it (a rollback)
    canary: str | None = None
    weight: int = 10
    shadow: str | None = None
    finish: bool = False
    abort: bool = False
    force: bool = False  # redeploy what serves; replace a running candidate

    def check(self) -> None:
        """One change at a time, with versions that are numbers."""
        given = {
            "--version": self.version is not None,
            "--canary": self.canary is not None,
            "--shadow": self.shadow is not None,
            "--finish": self.finish,
            "--abort": self.abort,
        }
        asked = [flag for flag, on in given.items() if on]
        if len(asked) > 1:
            raise DurationError(f"give one of {' / '.join(asked)}: one change to serving at a time")
        for flag, value in (
            ("--version", self.version),
            ("--canary", self.canary),
            ("--shadow", self.shadow),
        ):
            if value is not None and not value.isdigit():
                raise DurationError(f"{flag} {value!r} is not a version number: give e.g. 3")
        if self.canary is not None:
            check_weight(self.weight)

    @property
    def moves_aliases(self) -> bool:
        """True when the change is made in the registry, and serving follows it."""
        return any((self.version, self.canary, self.shadow, self.finish, self.abort))


MAX_CONCURRENCY = 64  # `duration traffic`: requests in flight, at most


@dataclass(frozen=True, kw_only=True)
class TrafficRequest:
    """What to replay, and how fast."""

    month: str
    color: Color = Color.green
    rides: int = 1_000
    rate: float = 100.0  # requests a second, at most
    concurrency: int = 4  # requests in flight, at most
    batch: int = 1  # rides a request

    def check(self, max_rides: int) -> None:
        check_month(self.month)
        if self.rides < 1:
            raise DurationError(f"--rides {self.rides}: give at least 1")
        if not 0 < self.rate <= 100_000:
            raise DurationError(f"--rate {self.rate:g}: give requests a second, 0-100000")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise DurationError(f"--concurrency {self.concurrency}: give 1-{MAX_CONCURRENCY}")
        if not 1 <= self.batch <= max_rides:
            raise DurationError(
                f"--batch {self.batch}: give 1-{max_rides} rides a request (SERVE_MAX_RIDES)"
            )
