"""`duration pipeline`: everything, from the TLC files to a Production version."""

from __future__ import annotations

from pathlib import Path

import typer

from duration.cli import options, render
from duration.cli.runtime import connect_and_reap, long_running, settings, write_summary
from duration.cli.train import preflight
from duration.core.schema import COURSE, Color, FeatureSet
from duration.ops.specs import PipelineRequest
from duration.training.config import SearchBackend, SearchConfig, parse_baselines


def pipeline(
    ctx: typer.Context,
    color: Color = options.ColorOpt,
    train_month: str = options.month(COURSE.train, "--train", "Training month."),
    val: str = options.month(COURSE.val, "--val", "Validation month."),
    test: str = options.month(COURSE.test, "--test", "Test month."),
    features: FeatureSet = options.FeaturesOpt,
    trials: int = options.Trials,
    seed: int = options.Seed,
    max_rounds: int = options.MaxRounds,
    backend: SearchBackend = options.BackendOpt,
    parallelism: int = options.Parallelism,
    spark_master: str = options.Master,
    baselines: str = typer.Option(
        "all", "--baselines", help="all, none, or kinds joined by commas (linear,xgboost)."
    ),
    budget_rows: int = options.Budget,
    refit: int = options.Refit,
    summary: Path = options.Summary,
) -> None:
    """Run download -> prepare -> vectorize -> baselines -> tune -> register -> promote."""
    search = SearchConfig(
        trials=trials,
        seed=seed,
        max_rounds=max_rounds,
        backend=backend,
        parallelism=parallelism,
        spark_master=spark_master,
        budget_rows=budget_rows,
        refit=refit,
    )
    req = PipelineRequest(
        color=color,
        train=train_month,
        val=val,
        test=test,
        features=features,
        baselines=parse_baselines(baselines),
        search=search,
    )
    req.check()  # before the ML stack is imported: a bad flag is quick
    preflight(ctx, search)
    from duration.ops.pipeline import run  # deferred: the ML stack loads only to do the work

    uri = connect_and_reap(ctx)
    with long_running(ctx, uri) as stop:
        r = run(settings(ctx), req, stop)
    write_summary(summary, r.summary())
    render.report_pipeline(r, uri, req.name)
