"""`duration observe`: Prometheus, Alertmanager and the alert relay, on 127.0.0.1."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer

from duration.cli.runtime import settings

observe_app = typer.Typer(
    no_args_is_help=True,
    help="Serving metrics in Prometheus, alert rules, and alerts into the alert channel.",
)


@observe_app.command("start")
def start(ctx: typer.Context) -> None:
    """Start Prometheus (DURATION_PROMETHEUS_PORT), Alertmanager (DURATION_ALERTMANAGER_PORT)
    and the relay; the rules are checked first."""
    from duration.observe import life  # deferred: as every command's work

    st = life.start(settings(ctx))
    typer.echo(f"Prometheus at {st.prometheus} (its API; `duration observe status` lists alerts)")
    typer.echo(f"Alertmanager at {st.alertmanager}; alerts go to the alert channel")


@observe_app.command("status")
def status(ctx: typer.Context) -> None:
    """JSON: what runs, the worker groups scraped, the alerts pending or firing (exit 1 when
    Prometheus does not run)."""
    from duration.observe import life  # deferred: as every command's work

    st = life.status(settings(ctx))
    typer.echo(json.dumps(asdict(st), indent=2))
    if not st.running.get("prometheus"):
        raise typer.Exit(1)


@observe_app.command("stop")
def stop(ctx: typer.Context) -> None:
    """Stop Prometheus, Alertmanager and the relay."""
    from duration.observe import life  # deferred: as every command's work

    stopped = life.stop(settings(ctx))
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "monitoring was not running")
