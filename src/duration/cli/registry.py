"""`duration register`, `promote` and `predict`: the registry's commands."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from duration.cli import options, render
from duration.cli.runtime import connect, settings, write_summary
from duration.core.schema import COURSE, NEXT_MONTH, Color
from duration.errors import DurationError
from duration.tracking.names import MODEL_NAME, TOP_N


def register(
    ctx: typer.Context,
    top_n: int = typer.Option(TOP_N, "--top-n", help="How many of the best trials to test."),
    name: str = options.Name,
    test: str = options.month(COURSE.test, "--test", "Test month."),
    search: str = typer.Option(
        None, "--search", help="The search's parent run id (default: the latest search)."
    ),
    summary: Path = options.Summary,
) -> None:
    """Register a search's best trial (by val RMSE) in Staging; test its top N."""
    if top_n < 1:
        raise DurationError(f"--top-n {top_n}: give at least 1")
    connect(ctx)
    from duration.registry import register as reg  # deferred: the ML stack loads to do the work

    if search is None:
        latest = reg.latest_search()
        search = latest.info.run_id
        typer.echo(f"using the latest search on the server: {latest.info.run_name} ({search})")
    r = reg.register(settings(ctx), test, name, top_n, parent_run_id=search)
    write_summary(summary, asdict(r))
    typer.echo(render.table([asdict(c) for c in r.candidates], ["run_id", "val_rmse", "test_rmse"]))
    typer.echo(
        f"registered {r.model_name} version {r.model_version} in Staging "
        f"(test RMSE {r.test_rmse:.4f} on {r.test_month})"
    )


def promote(
    ctx: typer.Context,
    name: str = options.Name,
    month: str = options.month(None, "--month", "Month to score both on (default: test month)."),
    min_improvement: float = options.MinImprovement,
    max_slice_loss: float = options.MaxSliceLoss,
    summary: Path = options.Summary,
) -> None:
    """Promote Staging to Production if it passes the gate against Production on one month."""
    rule = options.gate_rule(min_improvement, max_slice_loss)
    connect(ctx)
    from duration.registry.promote import promote as run  # deferred: the ML stack loads to work

    d = run(settings(ctx), name, month, rule)
    write_summary(summary, asdict(d))
    typer.echo(("promoted: " if d.promoted else "kept Production: ") + d.reason)


def predict(
    ctx: typer.Context,
    model: str = typer.Option(
        f"models:/{MODEL_NAME}@production", "--model", help="models:/NAME@alias, /Stage or m-..."
    ),
    color: Color = options.ColorOpt,
    month: str = options.month(NEXT_MONTH, "--month", "Month to score."),
    output: Path = typer.Option(None, "--output", help="Parquet file to write."),
) -> None:
    """Score a month with a registered model; write predictions and print the RMSE."""
    from duration.ops.predict import predict as run  # deferred: the ML stack loads to work

    connect(ctx)
    output = output or settings(ctx).paths.predictions / f"{color.value}_{month}.parquet"
    p = run(settings(ctx), model, color, month, output)
    typer.echo(
        f"{p.output}: {p.rows} rides scored by {p.model_name or model}"
        f"{' v' + p.model_version if p.model_version else ''}; RMSE {p.rmse:.4f} min"
    )
