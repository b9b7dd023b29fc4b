"""`duration serve` and `duration deploy`: the served model behind nginx."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from duration.cli import options
from duration.cli.runtime import connect, settings, stop_on_signals, write_summary
from duration.core.schema import Color
from duration.errors import DurationError
from duration.ops.specs import ServingChange, TrafficRequest
from duration.serving import service
from duration.tracking import client

if TYPE_CHECKING:
    from duration.deployer.life import DeployerStatus
    from duration.ops.deploy import Deployment

serve_app = typer.Typer(
    no_args_is_help=True, help="Serve the Production version over HTTP (behind nginx)."
)


Workers = typer.Option(
    None, "--workers", help="Scoring worker processes [env SERVE_WORKERS, default the cores]."
)


@serve_app.command("start")
def serve_start(
    ctx: typer.Context,
    name: str = options.Name,
    wait: float = options.Wait,
    workers: int = Workers,
) -> None:
    """Serve models:/NAME@production on 127.0.0.1:$SERVE_PORT unless it already serves, and
    start the deployer: from then on, serving follows the registry's aliases."""
    from duration.deployer import life  # deferred: the ML stack loads only to do the work

    s = settings(ctx).but({"serve.workers": "--workers"}, serve={"workers": workers})
    connect(ctx)
    started = life.start_serving(s, name, wait)
    st, dep = started.state, started.deployer
    typer.echo(f"serving {st.name} version {st.version} at {st.url}/invocations")
    typer.echo(f"the deployer follows {st.name}'s aliases: {_deployer_said(dep)}")


def _deployer_said(dep: DeployerStatus) -> str:
    if dep.problem:
        return f"{dep.url} ({dep.problem})"
    return f"{dep.url} (webhook {dep.webhook})"


@serve_app.command("log")
def serve_log(
    ctx: typer.Context,
    output: Path = typer.Option(None, "--output", help="Parquet file to write."),
    check: bool = typer.Option(
        False, "--check", help="Move the log's unreadable files into quarantine/ beside it."
    ),
) -> None:
    """Write every served prediction in the log (one row per ride) to one parquet file; or,
    with --check, set aside the files that cannot be read."""
    if (output is None) == (not check):
        raise DurationError("give --output FILE to export the log, or --check to check it")
    from duration.serving import log_read  # deferred: pyarrow loads only to do the work

    s = settings(ctx)
    if check:
        moved = log_read.check(s.paths.serve_log)
        for m in moved:
            typer.echo(f"moved {m.path.name} ({m.size} bytes, {m.reason}) to {m.path.parent}")
        typer.echo(f"{len(moved)} unreadable file(s) set aside; the log reads whole again")
        return
    log = log_read.export(s.paths.serve_log, output)
    table = log.table
    versions = table.column("model_version").value_counts().to_pylist()
    ordered = sorted(versions, key=lambda v: str(v["values"]))
    by = ", ".join(f"v{v['values']}: {v['counts']}" for v in ordered)
    typer.echo(f"{output}: {table.num_rows} served rides ({by})")
    if warning := log.warning():
        typer.echo(warning, err=True)


@serve_app.command("status")
def serve_status(ctx: typer.Context) -> None:
    """JSON: url, model_name, version, pid, healthy, arms, log, deployer (exit 1 when not
    healthy)."""
    from duration.deployer import life  # deferred: the ML stack loads only to do the work

    s = settings(ctx)
    st = service.status(s)
    client.use(s.tracking.url)  # not started if it is down: the deployer's webhook is then unknown
    dep = life.status(s)
    typer.echo(json.dumps({**st.to_json(), "deployer": asdict(dep)}, indent=2))
    if not st.healthy:
        raise typer.Exit(1)


@serve_app.command("stop")
def serve_stop(ctx: typer.Context, wait: float = options.Wait) -> None:
    """Stop the deployer, the proxy and the scoring processes."""
    from duration.deployer import life  # deferred: the ML stack loads only to do the work

    stopped = life.stop_serving(settings(ctx), wait)
    typer.echo(f"stopped {' and '.join(stopped)}" if stopped else "nothing was serving")


def deploy(
    ctx: typer.Context,
    name: str = options.Name,
    version: str = typer.Option(
        None, "--version", help="Serve this version and make it Production (rollback)."
    ),
    canary: str = typer.Option(
        None, "--canary", help="Serve this version to --weight % of clients beside Production."
    ),
    weight: int = typer.Option(10, "--weight", help="The canary's share of clients, 1-99 %."),
    shadow: str = typer.Option(
        None, "--shadow", help="Score every request with this version too; it answers no one."
    ),
    finish: bool = typer.Option(
        False, "--finish", help="The canary or shadow becomes Production (registry, traffic)."
    ),
    abort: bool = typer.Option(False, "--abort", help="Remove the canary or shadow."),
    rows: int = typer.Option(200, "--rows", help="Real rides in the smoke test."),
    force: bool = typer.Option(
        False, "--force", help="Redeploy even if it serves; replace a running candidate."
    ),
    wait: float = options.Wait,
    summary: Path = options.Summary,
) -> None:
    """Put the Production version (or --version N) into service: start, smoke-test, switch.
    Or a candidate beside it: --canary N --weight W, --shadow N; then --finish or --abort."""
    change = ServingChange(
        version=version,
        canary=canary,
        weight=weight,
        shadow=shadow,
        finish=finish,
        abort=abort,
        force=force,
    )
    change.check()
    if rows < 1:
        raise DurationError(f"--rows {rows}: give at least 1")
    from duration.ops import changes  # deferred: the ML stack loads only to do the work

    connect(ctx)
    done = changes.apply(settings(ctx), name, change, rows, wait, say=typer.echo)
    write_summary(summary, {"steps": [asdict(d) for d in done]})
    if not done:
        typer.echo(f"serving already matches the registry's aliases of {name}: nothing to do")
    for d in done:
        typer.echo(_said(d.deployment) if d.deployment else f"the deployer: {d.said()}")
    if failed := [d for d in done if d.problem]:
        raise DurationError(
            f"could not {failed[0].step.said()} ({failed[0].problem}): what served goes on "
            "serving, and the alias stays where it was moved (move it back, or fix and move it "
            "again)"
        )


def _said(d: Deployment) -> str:
    """What a deploy did, in one line."""
    if d.outcome == "already-serving":
        return f"{d.model_name} version {d.version} already serves at {d.url}: nothing to do"
    if d.outcome == "aborted":
        return (
            f"aborted: the {d.role} of version {d.version} is out; version "
            f"{d.previous_version} answers every request at {d.url}"
        )
    what = {
        "canary": f"a canary for {d.weight}% of clients beside",
        "shadow": "a shadow of",
        "finished": f"Production (was the {d.role}), replacing",
    }.get(d.outcome)
    serves = f"{d.outcome}: {d.model_name} version {d.version} serves at {d.url}"
    lead = (
        f"{serves} as {what} version {d.previous_version}"
        if what
        else f"{serves} (was {d.previous_version or 'nothing'})"
    )
    t, smoke = d.timings, d.smoke
    rides, diff = (smoke.rows, smoke.max_abs_diff) if smoke else (0, 0.0)
    return (
        f"{lead}; started in {t.get('start_s', 0):.1f} s, smoke test of {rides} rides max "
        f"diff {diff:.2g} min, switched in {t.get('switch_s', 0):.2f} s"
    )


def traffic(
    ctx: typer.Context,
    month: str = options.month(None, "--month", "The month whose rides to replay."),
    color: Color = options.ColorOpt,
    rides: int = typer.Option(TrafficRequest.rides, "--rides", help="Rides to send."),
    rate: float = typer.Option(TrafficRequest.rate, "--rate", help="Requests a second, at most."),
    concurrency: int = typer.Option(
        TrafficRequest.concurrency, "--concurrency", help="Requests in flight, at most."
    ),
    batch: int = typer.Option(TrafficRequest.batch, "--batch", help="Rides a request."),
    summary: Path = options.Summary,
) -> None:
    """Replay a month's real rides through the served model, each with its ride_id."""
    if month is None:
        raise DurationError("give --month YYYY-MM: the month whose rides to replay")
    from duration.ops import traffic as tr  # deferred: pandas loads only to do the work

    req = TrafficRequest(
        month=month, color=color, rides=rides, rate=rate, concurrency=concurrency, batch=batch
    )
    with stop_on_signals() as stop:
        t = tr.replay(settings(ctx), req, stop)
    write_summary(summary, asdict(t))
    by = ", ".join(f"v{v}: {n}" for v, n in sorted(t.versions.items()))
    if len(t.arms) > 1:
        by += "; " + ", ".join(f"{a}: {n}" for a, n in sorted(t.arms.items()))
    typer.echo(
        f"{t.answered_rides} of {t.rides} {t.color} {t.month} rides answered by {t.url} "
        f"({by or 'none'}) in {t.seconds:.1f} s: {t.requests_per_s} requests/s, p50 "
        f"{t.p50_ms} ms, p99 {t.p99_ms} ms, {t.failed_requests} failed, "
        f"{t.refused_requests} refused"
    )
    for line in t.errors:
        typer.echo(f"  not answered: {line}", err=True)
    if not t.logged:
        typer.echo(
            "  the prediction log had not caught up when it returned: see `duration serve status`",
            err=True,
        )
    if t.failed_requests:
        raise typer.Exit(1)
