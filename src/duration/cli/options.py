"""Options shared by several commands. Their defaults are the request dataclasses' own, so
each default is written once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from duration.core.gate import GateRule
from duration.core.schema import Color, FeatureSet, check_month
from duration.errors import DurationError
from duration.tracking.names import MODEL_NAME
from duration.training.config import BUDGET_ROWS, REFIT, SearchConfig


def _month(flag: str) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check_month(value, flag)
        except DurationError as e:
            raise typer.BadParameter(f"{value!r} is not a month: use YYYY-MM, e.g. 2021-01") from e

    return check


def month(default: str | None, flag: str, help: str) -> Any:
    """A YYYY-MM option, checked as it is parsed."""
    return typer.Option(default, flag, help=help, callback=_month(flag))


ColorOpt = typer.Option(Color.green, "--color", help="TLC record type.")
FeaturesOpt = typer.Option(FeatureSet.default, "--features", help="Feature set.")
Summary = typer.Option(None, "--summary", help="Write a JSON summary here.")
Seed = typer.Option(SearchConfig.seed, "--seed", help="Seed for every model and the search.")
MaxRounds = typer.Option(None, "--max-rounds", help="Cap xgboost boosting rounds.")
Name = typer.Option(MODEL_NAME, "--name", help="Registered model name.")
Wait = typer.Option(0.0, "--wait", help="Seconds to wait for a deploy in progress.")
BackendOpt = typer.Option(
    SearchConfig.backend, "--backend", help="local (one trial at a time) or spark (SparkTrials)."
)
Parallelism = typer.Option(
    SearchConfig.parallelism, "--parallelism", help="Trials at once (spark backend)."
)
Master = typer.Option(
    None, "--spark-master", help="Spark master [env DURATION_SPARK_MASTER, default local[*]]."
)
Budget = typer.Option(
    BUDGET_ROWS,
    "--budget-rows",
    help="Trials (and tree baselines) fit on a sample of at most this many rides; 0: all.",
)
Refit = typer.Option(
    REFIT, "--refit", help="Under the budget: the best trials refit on every ride."
)
Trials = typer.Option(SearchConfig.trials, "--trials", help="Number of TPE trials.")
MinImprovement = typer.Option(
    GateRule.min_improvement, "--min-improvement", help="RMSE the challenger must win by."
)
MaxSliceLoss = typer.Option(
    GateRule.max_slice_loss,
    "--max-slice-loss",
    help="No slice of 500+ rides may get worse by more than this share.",
)


def gate_rule(min_improvement: float, max_slice_loss: float) -> GateRule:
    """The gate's rule from its flags, refused in one line when it makes no sense."""
    if min_improvement < 0:
        raise DurationError(f"--min-improvement {min_improvement}: give 0 or more")
    if max_slice_loss < 0:
        raise DurationError(f"--max-slice-loss {max_slice_loss}: give 0 or more (0.1 is 10%)")
    return GateRule(min_improvement=min_improvement, max_slice_loss=max_slice_loss)
