"""`duration monitor` (one version on one labelled month) and `duration cycle` (the monthly
cycle, or a replay of it over a range)."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import typer

from duration.cli import options, render
from duration.cli.runtime import connect, connect_and_reap, long_running, settings, write_summary
from duration.core.schema import NEXT_MONTH, Color
from duration.errors import DurationError
from duration.ops.specs import MAX_WINDOW, CycleRequest, check_range
from duration.settings import Monitor, Settings
from duration.tracking.names import MODEL_NAME

FLAGS = {f"monitor.{k}": "--" + k.replace("_", "-") for k in Monitor.model_fields}


def _threshold(name: str, help: str) -> Any:
    default = Monitor.model_fields[name].default
    return typer.Option(None, FLAGS[f"monitor.{name}"], help=f"{help} [env, default {default}].")


def monitor(
    ctx: typer.Context,
    model: str = typer.Option(
        f"models:/{MODEL_NAME}@production", "--model", help="A registered version's URI."
    ),
    color: Color = options.ColorOpt,
    month: str = options.month(NEXT_MONTH, "--month", "Labelled month to monitor."),
    drift_threshold: float = _threshold("drift_threshold", "Column drift at this KS / JS score"),
    drift_share: float = _threshold("drift_share", "Verdict drift from this share of columns"),
    rmse_ratio: float = _threshold("rmse_ratio", "Verdict degraded above this RMSE / test RMSE"),
    served: bool = typer.Option(
        False, "--served", help="Monitor what was served of the month (the prediction log)."
    ),
    summary: Path = options.Summary,
) -> None:
    """Score a labelled month with a version; measure quality, data quality and drift.
    With --served: the realised quality of what the served model answered for the month."""
    given = {
        "drift_threshold": drift_threshold,
        "drift_share": drift_share,
        "rmse_ratio": rmse_ratio,
    }
    s = settings(ctx).but(FLAGS, monitor=given)
    if served:
        return _served(ctx, s, color, month, summary)
    connect(ctx)
    from duration.ops import monitor as mo  # deferred: the ML stack loads only to do the work

    r = mo.monitor(s, model, color, month)
    write_summary(summary, asdict(r))
    typer.echo(
        f"{r.model_name} v{r.model_version} on {r.color} {r.month} ({r.rows} rides, "
        f"{r.months_since_training} months after training): RMSE {r.rmse:.4f} min "
        f"({r.rmse_ratio:.2f}x its test RMSE {r.reference_rmse:.4f}), drift share "
        f"{r.drift_share:.2f}, prediction drift {r.prediction_drift:.3f}: {r.verdict}"
    )
    typer.echo(f"monitoring run {r.run_id}")


def _served(ctx: typer.Context, s: Settings, color: Color, month: str, summary: Path) -> None:
    from duration.ops import monitor_served  # deferred: the ML stack loads only to do the work

    connect(ctx)
    r = monitor_served.monitor(s, color, month)
    write_summary(summary, asdict(r))
    typer.echo(
        f"served {color.value} {month}: {r.month_rides} of the {r.logged_rides} logged rides "
        "are this month's"
    )
    cols = ["model_version", "arms", "served_rides", "labelled_share", "rmse", "mae"]
    typer.echo(render.table(r.versions, cols))
    typer.echo(f"monitoring run {r.run_id}")
    if r.warning:
        typer.echo(r.warning, err=True)


CycleTrials = typer.Option(
    None, "--trials", help="Trials when it retrains [env DURATION_CYCLE_TRIALS, default 10]."
)
CycleWindow = typer.Option(
    None,
    "--window",
    help=f"Labelled months to retrain on (2-{MAX_WINDOW}): the newest validates "
    "[env DURATION_CYCLE_WINDOW, default 2].",
)
Live = typer.Option(
    None,
    "--live",
    help="off: promote on the offline gate; shadow or canary: put the challenger beside "
    "the served Production, and decide next month on its rides and the gate "
    "[env DURATION_CYCLE_LIVE, default off].",
)
LiveWeight = typer.Option(
    None,
    "--live-weight",
    help="A live canary's share of clients, % [env DURATION_CYCLE_LIVE_WEIGHT, default 20].",
)


def cycle(
    ctx: typer.Context,
    color: Color = options.ColorOpt,
    month: str = options.month(None, "--month", "Labelled month to monitor and gate on."),
    start: str = options.month(None, "--from", "Replay: the first month."),
    end: str = options.month(None, "--to", "Replay: the last month."),
    trials: int = CycleTrials,
    window: int = CycleWindow,
    min_improvement: float = options.MinImprovement,
    max_slice_loss: float = options.MaxSliceLoss,
    live: str = Live,
    live_weight: int = LiveWeight,
    max_rounds: int = options.MaxRounds,
    seed: int = options.Seed,
    name: str = options.Name,
    summary: Path = options.Summary,
) -> None:
    """Monitor a month with Production; retrain, gate and promote if it drifted or degraded.
    With --from and --to, replay every month between them in order."""
    if (month is None) == (start is None and end is None) or (start is None) != (end is None):
        raise DurationError("give --month M for one month, or --from M1 --to M2 to replay")
    req = _cycle_request(
        ctx,
        CycleRequest(
            month=month or start,
            color=color,
            name=name,
            seed=seed,
            max_rounds=max_rounds,
            rule=options.gate_rule(min_improvement, max_slice_loss),
        ),
        trials=trials,
        window=window,
        live=live,
        live_weight=live_weight,
    )
    req.check()
    if month is None:
        check_range(start, end)
        return _replay(ctx, req, start, end, summary)
    from duration.ops import cycle as cy  # deferred: the ML stack loads only to do the work

    uri = connect_and_reap(ctx)
    with long_running(ctx, uri) as stop:
        r = cy.run(settings(ctx), req, stop)
    write_summary(summary, asdict(r))
    again = " (decided before; nothing changed)" if r.repeated else ""
    typer.echo(
        f"{r.month}: Production v{r.champion_version} {r.verdict} -> {r.action}{again}: "
        f"{r.reason}; Production is v{r.production_version}"
    )


def _cycle_request(ctx: typer.Context, req: CycleRequest, **given: object) -> CycleRequest:
    """`req` with the cycle's settings (DURATION_CYCLE_*), overridden by the flags given."""
    flags = {f"automate.{k}": "--" + k.replace("_", "-") for k in given}
    a = settings(ctx).but(flags, automate=given).automate
    return replace(req, trials=a.trials, window=a.window, live=a.live, live_weight=a.live_weight)


def _replay(ctx: typer.Context, req: CycleRequest, start: str, end: str, summary: Path) -> None:
    from duration.ops import cycle as cy  # deferred: the ML stack loads only to do the work

    uri = connect_and_reap(ctx)
    typer.echo(cy.row(None))
    with long_running(ctx, uri) as stop:
        rows = cy.replay(settings(ctx), req, start, end, stop, say=typer.echo)
    write_summary(summary, [asdict(r) for r in rows])


ab_app = typer.Typer(no_args_is_help=True, help="Live decisions: canary and shadow arms.")


@ab_app.command("report")
def ab_report(
    ctx: typer.Context,
    color: Color = options.ColorOpt,
    month: str = options.month(None, "--month", "The labelled month the arms served."),
    max_slice_loss: float = options.MaxSliceLoss,
    summary: Path = options.Summary,
) -> None:
    """Per arm: rides, realised RMSE (95% CI) and MAE; the difference; promote, abort or
    continue. Logged in the nyc-taxi-duration-ab experiment."""
    if month is None:
        raise DurationError("give --month YYYY-MM: the labelled month the arms served")
    rule = options.gate_rule(0.0, max_slice_loss)
    from duration.ops import ab  # deferred: the ML stack loads only to do the work

    connect(ctx)
    r = ab.report(settings(ctx), color, month, rule)
    write_summary(summary, asdict(r))
    cols = ["version", "role", "weight", "rides", "rmse", "ci_low", "ci_high", "mae"]
    typer.echo(render.table(r.arms, cols))
    typer.echo(f"{r.decision}: {r.reason}")
    typer.echo(f"a/b run {r.run_id}")
    if r.warning:
        typer.echo(r.warning, err=True)


def report(
    ctx: typer.Context,
    start: str = options.month(None, "--from", "The first month."),
    end: str = options.month(None, "--to", "The last month."),
    output: Path | None = typer.Option(
        None, "--output", help="The page [default: reports/model-life-FROM-TO.html]."
    ),
    name: str = options.Name,
) -> None:
    """The model's life on one offline page: Production's versions, offline and served RMSE,
    verdicts and decisions, drift, and the served volume and latency, month by month; also
    logged as a run's artifact in MLflow."""
    from duration.ops.life_page import report as life_report  # deferred: plotly, MLflow

    if start is None or end is None:
        raise DurationError("give --from M1 --to M2: the months the page shows")
    check_range(start, end)
    connect(ctx)
    out = output or Path("reports") / f"model-life-{start}-{end}.html"
    page, run_id = life_report(settings(ctx), name, start, end, out)
    typer.echo(f"the model's life, {start} to {end}: {page} (run {run_id})")
