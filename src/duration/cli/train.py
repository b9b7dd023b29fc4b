"""`duration train` (one model, one run) and `duration tune` (the hyperopt search)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from duration.cli import options, render
from duration.cli.runtime import connect, connect_and_reap, long_running, settings, write_summary
from duration.core.schema import COURSE, Color, FeatureSet, ModelKind
from duration.spark import session as spark
from duration.training.config import SearchBackend, SearchConfig, check_rounds


def train(
    ctx: typer.Context,
    model: ModelKind = typer.Option(ModelKind.linear, "--model", help="Estimator."),
    features: FeatureSet = options.FeaturesOpt,
    color: Color = options.ColorOpt,
    train_month: str = options.month(COURSE.train, "--train", "Training month."),
    val: str = options.month(COURSE.val, "--val", "Validation month."),
    seed: int = options.Seed,
    max_rounds: int = options.MaxRounds,
    summary: Path = options.Summary,
) -> None:
    """Train one model on vectorized features and log it as one MLflow run."""
    check_rounds(max_rounds)
    from duration.data import matrices  # deferred: the ML stack loads only to do the work
    from duration.training import estimators
    from duration.training.train import train_run

    inputs = matrices.load_inputs(settings(ctx), color, features, train_month, val)
    connect(ctx)
    result = asdict(train_run(inputs, model, estimators.round_cap(model, max_rounds), seed))
    write_summary(summary, result)
    typer.echo(render.table([result], ["model", "features", "train_rmse", "val_rmse", "run_id"]))


def tune(
    ctx: typer.Context,
    model: ModelKind = typer.Option(SearchConfig.kind, "--model", help="xgboost or random_forest."),
    features: FeatureSet = options.FeaturesOpt,
    color: Color = options.ColorOpt,
    train_month: str = options.month(COURSE.train, "--train", "Training month."),
    val: str = options.month(COURSE.val, "--val", "Validation month (early stopping, scoring)."),
    trials: int = options.Trials,
    seed: int = options.Seed,
    timeout: float = typer.Option(None, "--timeout", help="Stop after this many seconds."),
    max_rounds: int = options.MaxRounds,
    backend: SearchBackend = options.BackendOpt,
    parallelism: int = options.Parallelism,
    spark_master: str = options.Master,
    budget_rows: int = options.Budget,
    refit: int = options.Refit,
    summary: Path = options.Summary,
) -> None:
    """Search hyperparameters with hyperopt (TPE); one parent run, one child run per trial."""
    config = SearchConfig(
        kind=model,
        trials=trials,
        seed=seed,
        timeout=timeout,
        max_rounds=max_rounds,
        backend=backend,
        parallelism=parallelism,
        spark_master=spark_master,
        budget_rows=budget_rows,
        refit=refit,
    )
    config.check()  # before the ML stack is imported: a bad flag is quick
    preflight(ctx, config)
    from duration.data import matrices  # deferred: the ML stack loads only to do the work
    from duration.training.search import search

    inputs = matrices.load_inputs(settings(ctx), color, features, train_month, val)
    uri = connect_and_reap(ctx)
    with long_running(ctx, uri) as stop:
        result = search(inputs, config, stop)
    out = asdict(result)
    write_summary(summary, out)
    cols = ["model", "features", "completed", "best_val_rmse", "seconds_per_trial", "status"]
    typer.echo(render.table([out], cols))
    typer.echo(f"best params: {json.dumps(result.best_params)}")
    if line := render.budget_line(result.budget):
        typer.echo(line)
    if result.status == "KILLED":
        typer.echo(
            f"search stopped early ({result.stopped}) after {result.completed} of {trials} "
            f"trials; the finished trials are kept in run {result.parent_run_id}",
            err=True,
        )
        if result.stopped == "interrupted":
            raise typer.Exit(130)


def preflight(ctx: typer.Context, config: SearchConfig) -> None:
    """For the spark backend: Java, pyspark and the master, before any work starts."""
    if config.backend is SearchBackend.spark:
        spark.preflight(config.spark_master or settings(ctx).spark.master)
