"""`duration automate`: the orchestrator that decides each TLC month as it is published."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer

from duration.cli import options
from duration.cli.runtime import connect, connect_and_reap, settings
from duration.core.schema import check_month
from duration.errors import DurationError

automate_app = typer.Typer(
    no_args_is_help=True,
    help="Level 4: the orchestrator (Dagster) decides each TLC month as it is published.",
)


@automate_app.command("start")
def start(ctx: typer.Context, name: str = options.Name) -> None:
    """Start the orchestrator's daemon and UI on 127.0.0.1 (DURATION_AUTOMATE_PORT); state
    under DURATION_HOME/.dagster."""
    from duration.automate import life  # deferred: Dagster loads only to do the work

    connect_and_reap(ctx)
    st = life.start(settings(ctx), name)
    typer.echo(f"the orchestrator runs: UI at {st.url} (no login of its own: loopback only)")
    typer.echo(
        f"it watches {settings(ctx).paths.tlc_url} every "
        f"{settings(ctx).automate.poll_s:g} s (DURATION_AUTOMATE_POLL_S) for months to decide"
    )


@automate_app.command("status")
def status(ctx: typer.Context) -> None:
    """JSON: its processes, the month sensor's last tick, the months taken, runs in flight,
    the last decision (exit 1 when it does not run)."""
    from duration.automate import life  # deferred: Dagster loads only to do the work

    st = life.status(settings(ctx))
    typer.echo(json.dumps(asdict(st), indent=2))
    if not st.running:
        raise typer.Exit(1)


@automate_app.command("stop")
def stop(ctx: typer.Context) -> None:
    """Stop the daemon, the UI and any run in flight (process groups, a bounded wait)."""
    from duration.automate import life  # deferred: Dagster loads only to do the work

    stopped = life.stop(settings(ctx))
    typer.echo(f"stopped the {' and the '.join(stopped)}" if stopped else "nothing was running")


@automate_app.command("pause")
def pause(ctx: typer.Context) -> None:
    """The month sensor and the monthly schedule skip until `resume` (runs in flight go on)."""
    from duration.automate import life  # deferred: Dagster loads only to do the work

    life.pause(settings(ctx), on=True)
    typer.echo("paused: no new month is taken until `duration automate resume`")


@automate_app.command("resume")
def resume(ctx: typer.Context) -> None:
    """Take new months again."""
    from duration.automate import life  # deferred: Dagster loads only to do the work

    life.pause(settings(ctx), on=False)
    typer.echo("resumed: the next poll takes the next published month")


@automate_app.command("approve")
def approve(
    ctx: typer.Context,
    month: str = typer.Argument(..., help="The month whose decision waits (YYYY-MM)."),
    name: str = options.Name,
) -> None:
    """Make the promotion or finish that MONTH's decision waits for (approval mode manual)."""
    try:
        check_month(month, "MONTH")
    except DurationError as e:
        raise DurationError(f"{e}: give the month whose decision waits, e.g. 2023-05") from e
    from duration.ops import approval  # deferred: the ML stack loads only to do the work

    connect(ctx)
    r = approval.approve(settings(ctx), name, month)
    typer.echo(f"{month}: approved; {r.reason}; Production is v{r.production_version}")
