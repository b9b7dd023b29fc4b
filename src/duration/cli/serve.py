"""`duration serve` and `duration deploy`: the served model behind nginx."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from duration.cli import options
from duration.cli.runtime import connect, settings, write_summary
from duration.errors import DurationError
from duration.infra import serving

serve_app = typer.Typer(
    no_args_is_help=True, help="Serve the Production version over HTTP (behind nginx)."
)


@serve_app.command("start")
def serve_start(ctx: typer.Context, name: str = options.Name, wait: float = options.Wait) -> None:
    """Serve models:/NAME@production on 127.0.0.1:$SERVE_PORT unless it already serves."""
    from duration.ops import deploy  # deferred: the ML stack loads only to do the work

    connect(ctx)
    st = deploy.start(settings(ctx), name, wait)
    typer.echo(f"serving {st.name} version {st.version} at {st.url}/invocations")


@serve_app.command("status")
def serve_status(ctx: typer.Context) -> None:
    """JSON: url, model_name, version, pid, healthy (exit 1 when not healthy)."""
    st = serving.status(settings(ctx))
    typer.echo(json.dumps(st, indent=2))
    if not st["healthy"]:
        raise typer.Exit(1)


@serve_app.command("stop")
def serve_stop(ctx: typer.Context, wait: float = options.Wait) -> None:
    """Stop the proxy and the scoring process."""
    from duration.ops import deploy  # deferred: the ML stack loads only to do the work

    stopped = deploy.stop(settings(ctx), wait)
    typer.echo(f"stopped {' and '.join(stopped)}" if stopped else "nothing was serving")


def deploy(
    ctx: typer.Context,
    name: str = options.Name,
    version: str = typer.Option(
        None, "--version", help="Serve this version and make it Production (rollback)."
    ),
    rows: int = typer.Option(200, "--rows", help="Real rides in the smoke test."),
    force: bool = typer.Option(False, "--force", help="Redeploy even if it already serves."),
    wait: float = options.Wait,
    summary: Path = options.Summary,
) -> None:
    """Put the Production version (or --version N) into service: start, smoke-test, switch."""
    if version is not None and not version.isdigit():
        raise DurationError(f"--version {version!r} is not a version number: give e.g. 3")
    if rows < 1:
        raise DurationError(f"--rows {rows}: give at least 1")
    from duration.ops import deploy as dp  # deferred: the ML stack loads only to do the work

    connect(ctx)
    d = dp.deploy(settings(ctx), name, version, rows, force, wait)
    write_summary(summary, asdict(d))
    if d.outcome == "already-serving":
        typer.echo(f"{name} version {d.version} already serves at {d.url}: nothing to do")
        return
    t = d.timings
    typer.echo(
        f"{d.outcome}: {name} version {d.version} serves at {d.url} (was "
        f"{d.previous_version or 'nothing'}); started in {t.get('start_s', 0):.1f} s, smoke "
        f"test of {d.smoke.get('rows', 0)} rides max diff {d.smoke.get('max_abs_diff', 0):.2g} "
        f"min, switched in {t.get('switch_s', 0):.2f} s"
    )
