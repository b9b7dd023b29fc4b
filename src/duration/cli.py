"""The `duration` command line: each command parses, calls one stage function, and reports.

Errors a user can fix are printed as one line (no traceback) with a non-zero exit code.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import typer
from typer.exceptions import TyperException

from duration.config import (
    BUDGET_ROWS,
    MLFLOW_CLIENT_ENV,
    MODEL_NAME,
    REFIT,
    Color,
    FeatureSet,
    ModelKind,
    Settings,
    check_month,
)
from duration.errors import DurationError, Stopped

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Predict NYC taxi ride durations, tracked end to end in MLflow.",
)
server_app = typer.Typer(no_args_is_help=True, help="The local MLflow tracking server.")
app.add_typer(server_app, name="server")


def _month(flag: str):
    def check(value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check_month(value, flag)
        except DurationError as e:
            raise typer.BadParameter(f"{value!r} is not a month: use YYYY-MM, e.g. 2021-01") from e

    return check


ColorOpt = typer.Option(Color.green, "--color", help="TLC record type.")
FeaturesOpt = typer.Option(FeatureSet.default, "--features", help="Feature set.")
SeedOpt = typer.Option(42, "--seed", help="Seed for every model and the search.")
SummaryOpt = typer.Option(None, "--summary", help="Write a JSON summary here.")
BackendOpt = typer.Option(
    "local", "--backend", help="local (one trial at a time) or spark (hyperopt SparkTrials)."
)
ParallelismOpt = typer.Option(1, "--parallelism", help="Trials at once (spark backend).")
MasterOpt = typer.Option(
    None, "--spark-master", help="Spark master [env DURATION_SPARK_MASTER, default local[*]]."
)
BudgetOpt = typer.Option(
    BUDGET_ROWS,
    "--budget-rows",
    help="Trials (and tree baselines) fit on a sample of at most this many rides; 0: all.",
)
RefitOpt = typer.Option(
    REFIT, "--refit", help="Under the budget: the best trials refit on every ride."
)


def _opt_month(default: str | None, flag: str, help: str):
    return typer.Option(default, flag, help=help, callback=_month(flag))


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj


def _connect(ctx: typer.Context) -> str:
    from duration import tracking

    return tracking.connect(_settings(ctx))


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C or SIGTERM asks the work to stop cleanly (runs in flight end KILLED); a second
    Ctrl-C stops at once."""
    stop = threading.Event()

    def handler(signum, _frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


SERVER_MISSES = 3  # checks in a row without an answer: the tracking server is gone


@contextmanager
def _watch_server(ctx: typer.Context, uri: str) -> Iterator[None]:
    """Stop a long command within a minute if the tracking server stops answering.

    MLflow's client would retry each request for minutes. The runs this leaves RUNNING are
    ended by `duration runs reap` once the server is back.
    """
    from duration import server

    every = _settings(ctx).server_check_s
    done = threading.Event()

    def watch() -> None:
        misses = 0
        while not done.wait(every):
            misses = 0 if server.is_healthy(uri, timeout=min(every, 5.0)) else misses + 1
            if misses >= SERVER_MISSES:
                print(
                    f"duration: error: the tracking server at {uri} stopped answering for "
                    f"{SERVER_MISSES * every:.0f} s: start it again (make mlflow-start), then "
                    "`duration runs reap` ends the runs this left RUNNING",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(1)  # a request may be stuck in MLflow's retries: stop now

    threading.Thread(target=watch, name="server-watch", daemon=True).start()
    try:
        yield
    finally:
        done.set()


def _connect_and_reap(ctx: typer.Context) -> str:
    """Connect, then end the runs that dead processes on this host left RUNNING."""
    from duration import tracking

    uri = _connect(ctx)
    if reaped := tracking.reap():
        typer.echo(f"ended {len(reaped)} run(s) left RUNNING by processes that are gone")
    return uri


def _preflight(ctx: typer.Context, config) -> None:
    """For the spark backend: Java, pyspark and the master, before any work starts."""
    if config.backend == "spark":
        from duration import spark

        spark.preflight(config.spark_master or _settings(ctx).spark_master)


def _write_summary(path: Path | None, summary: dict) -> None:
    if path is None:
        return
    from duration.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")


def _table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


@app.callback()
def root(
    ctx: typer.Context,
    data_dir: Path = typer.Option(None, "--data-dir", help="Data folder [env DURATION_DATA_DIR]."),
    tlc_url: str = typer.Option(None, "--tlc-url", help="TLC base address [env DURATION_TLC_URL]."),
    tracking_uri: str = typer.Option(
        None, "--tracking-uri", help="MLflow server [env MLFLOW_TRACKING_URI]."
    ),
) -> None:
    """Predict NYC taxi ride durations, tracked end to end in MLflow."""
    ctx.obj = Settings.from_env(
        data_dir=data_dir,
        tlc_url=tlc_url.rstrip("/") if tlc_url else None,
        tracking_uri=tracking_uri,
    )


@app.command()
def download(
    ctx: typer.Context,
    color: Color = ColorOpt,
    month: str = _opt_month("2021-01", "--month", "Month, YYYY-MM."),
) -> None:
    """Download one monthly TLC file (and the zone table) into data/raw."""
    from duration import data

    s = _settings(ctx)
    path = data.download(s, color, month)
    data.download_zones(s)
    typer.echo(f"{path} ({data.verify_parquet(path)} rides)")


@app.command()
def prepare(
    ctx: typer.Context,
    color: Color = ColorOpt,
    month: str = _opt_month("2021-01", "--month", "Month, YYYY-MM."),
) -> None:
    """Download if needed, then normalise and filter one month into data/processed."""
    import pyarrow.parquet as pq

    from duration import data

    path = data.prepare(_settings(ctx), color, month)
    typer.echo(f"{path} ({pq.ParquetFile(path).metadata.num_rows} rides of 1-60 min)")


@app.command()
def vectorize(
    ctx: typer.Context,
    color: Color = ColorOpt,
    features: FeatureSet = FeaturesOpt,
    train: str = _opt_month("2021-01", "--train", "Training month (the DictVectorizer fits here)."),
    val: str = _opt_month("2021-02", "--val", "Validation month."),
    test: str = _opt_month(None, "--test", "Test month (optional)."),
) -> None:
    """Fit the DictVectorizer on the training month and transform the other months."""
    from duration import matrices

    months = [m for m in (val, test) if m]
    out = matrices.vectorize(_settings(ctx), color, features, train, months)
    typer.echo(f"{out}: {', '.join(sorted(p.name for p in out.glob('X_*.npz')))}")


@app.command()
def train(
    ctx: typer.Context,
    model: ModelKind = typer.Option(ModelKind.linear, "--model", help="Estimator."),
    features: FeatureSet = FeaturesOpt,
    color: Color = ColorOpt,
    train_month: str = _opt_month("2021-01", "--train", "Training month."),
    val: str = _opt_month("2021-02", "--val", "Validation month."),
    seed: int = SeedOpt,
    max_rounds: int = typer.Option(None, "--max-rounds", help="Cap xgboost boosting rounds."),
    summary: Path = SummaryOpt,
) -> None:
    """Train one model on vectorized features and log it as one MLflow run."""
    from duration import estimators, matrices
    from duration import train as tr

    inputs = matrices.load_inputs(_settings(ctx), color, features, train_month, val)
    _connect(ctx)
    result = tr.train_run(inputs, model, estimators.round_cap(model, max_rounds), seed)
    _write_summary(summary, asdict(result))
    typer.echo(_table([asdict(result)], ["model", "features", "train_rmse", "val_rmse", "run_id"]))


@app.command()
def tune(
    ctx: typer.Context,
    model: ModelKind = typer.Option(ModelKind.xgboost, "--model", help="xgboost or random_forest."),
    features: FeatureSet = FeaturesOpt,
    color: Color = ColorOpt,
    train_month: str = _opt_month("2021-01", "--train", "Training month."),
    val: str = _opt_month("2021-02", "--val", "Validation month (early stopping, scoring)."),
    trials: int = typer.Option(30, "--trials", help="Number of TPE trials."),
    seed: int = SeedOpt,
    timeout: float = typer.Option(None, "--timeout", help="Stop after this many seconds."),
    max_rounds: int = typer.Option(None, "--max-rounds", help="Cap xgboost boosting rounds."),
    backend: str = BackendOpt,
    parallelism: int = ParallelismOpt,
    spark_master: str = MasterOpt,
    budget_rows: int = BudgetOpt,
    refit: int = RefitOpt,
    summary: Path = SummaryOpt,
) -> None:
    """Search hyperparameters with hyperopt (TPE); one parent run, one child run per trial."""
    if timeout is not None and timeout <= 0:
        raise DurationError(f"--timeout {timeout}: give a positive number of seconds")
    from duration import tune as tn

    config = tn.SearchConfig(
        model, trials, seed, timeout, max_rounds, True, backend, parallelism, spark_master,
        budget_rows, refit,
    )  # fmt: skip
    config.check()  # before the ML stack is imported: a bad flag is quick
    from duration import estimators, matrices

    estimators.round_cap(model, max_rounds)  # refuses a cap below 1
    _preflight(ctx, config)
    inputs = matrices.load_inputs(_settings(ctx), color, features, train_month, val)
    uri = _connect_and_reap(ctx)
    with _stop_on_signals() as stop, _watch_server(ctx, uri):
        result = tn.search(inputs, config, stop)
    out = asdict(result)
    _write_summary(summary, out)
    typer.echo(
        _table(
            [out],
            ["model", "features", "completed", "best_val_rmse", "seconds_per_trial", "status"],
        )
    )
    typer.echo(f"best params: {json.dumps(result.best_params)}")
    if line := _budget_line(result.budget):
        typer.echo(line)
    if result.status == "KILLED":
        typer.echo(
            f"search stopped early ({result.stopped}) after {result.completed} of {trials} "
            f"trials; the finished trials are kept in run {result.parent_run_id}",
            err=True,
        )
        if result.stopped == "interrupted":
            raise typer.Exit(130)


@app.command()
def register(
    ctx: typer.Context,
    top_n: int = typer.Option(5, "--top-n", help="How many of the best trials to test."),
    name: str = typer.Option(MODEL_NAME, "--name", help="Registered model name."),
    test: str = _opt_month("2021-03", "--test", "Test month."),
    search: str = typer.Option(
        None, "--search", help="The search's parent run id (default: the latest search)."
    ),
    summary: Path = SummaryOpt,
) -> None:
    """Register a search's best trial (by val RMSE) in Staging; test its top N."""
    if top_n < 1:
        raise DurationError(f"--top-n {top_n}: give at least 1")
    _connect(ctx)
    from duration import registry

    if search is None:
        latest = registry.latest_search()
        search = latest.info.run_id
        typer.echo(f"using the latest search on the server: {latest.info.run_name} ({search})")
    r = registry.register(_settings(ctx), test, name, top_n, parent_run_id=search)
    _write_summary(summary, asdict(r))
    typer.echo(_table(r.candidates, ["run_id", "val_rmse", "test_rmse"]))
    typer.echo(
        f"registered {r.model_name} version {r.model_version} in Staging "
        f"(test RMSE {r.test_rmse:.4f} on {r.test_month})"
    )


@app.command()
def promote(
    ctx: typer.Context,
    name: str = typer.Option(MODEL_NAME, "--name", help="Registered model name."),
    month: str = _opt_month(None, "--month", "Month to score both on (default: the test month)."),
    min_improvement: float = typer.Option(
        0.0, "--min-improvement", help="RMSE margin the challenger must win by."
    ),
    summary: Path = SummaryOpt,
) -> None:
    """Promote Staging to Production if it beats Production on the same month."""
    _connect(ctx)
    from duration import registry

    d = registry.promote(_settings(ctx), name, month, min_improvement)
    _write_summary(summary, asdict(d))
    typer.echo(("promoted: " if d.promoted else "kept Production: ") + d.reason)


@app.command()
def predict(
    ctx: typer.Context,
    model: str = typer.Option(
        f"models:/{MODEL_NAME}@production", "--model", help="models:/NAME@alias, /Stage or m-..."
    ),
    color: Color = ColorOpt,
    month: str = _opt_month("2021-04", "--month", "Month to score."),
    output: Path = typer.Option(None, "--output", help="Parquet file to write."),
) -> None:
    """Score a month with a registered model; write predictions and print the RMSE."""
    from duration import predict as pr

    _connect(ctx)
    output = output or _settings(ctx).predictions_dir / f"{color.value}_{month}.parquet"
    p = pr.predict(_settings(ctx), model, color, month, output)
    typer.echo(
        f"{p.output}: {p.rows} rides scored by {p.model_name or model}"
        f"{' v' + p.model_version if p.model_version else ''}; RMSE {p.rmse:.4f} min"
    )


@app.command()
def monitor(
    ctx: typer.Context,
    model: str = typer.Option(
        f"models:/{MODEL_NAME}@production", "--model", help="A registered version's URI."
    ),
    color: Color = ColorOpt,
    month: str = _opt_month("2021-04", "--month", "Labelled month to monitor."),
    drift_threshold: float = typer.Option(
        None, "--drift-threshold", help="Column drift at this KS / JS score [env, default 0.1]."
    ),
    drift_share: float = typer.Option(
        None, "--drift-share", help="Verdict drift from this share of columns [env, 0.5]."
    ),
    rmse_ratio: float = typer.Option(
        None, "--rmse-ratio", help="Verdict degraded above this RMSE / test RMSE [env, 1.1]."
    ),
    summary: Path = SummaryOpt,
) -> None:
    """Score a labelled month with a version; measure quality, data quality and drift."""
    from dataclasses import replace

    from duration import monitor as mo
    from duration.config import check_threshold

    flags = {"drift_threshold": drift_threshold, "drift_share": drift_share}
    flags["rmse_ratio"] = rmse_ratio
    given = {
        k: check_threshold(k, v, "--" + k.replace("_", "-"))
        for k, v in flags.items()
        if v is not None
    }
    _connect(ctx)
    r = mo.monitor(replace(_settings(ctx), **given), model, color, month)
    _write_summary(summary, asdict(r))
    typer.echo(
        f"{r.model_name} v{r.model_version} on {r.color} {r.month} ({r.rows} rides, "
        f"{r.months_since_training} months after training): RMSE {r.rmse:.4f} min "
        f"({r.rmse_ratio:.2f}x its test RMSE {r.reference_rmse:.4f}), drift share "
        f"{r.drift_share:.2f}, prediction drift {r.prediction_drift:.3f}: {r.verdict}"
    )
    typer.echo(f"monitoring run {r.run_id}")


@app.command()
def cycle(
    ctx: typer.Context,
    color: Color = ColorOpt,
    month: str = _opt_month(None, "--month", "Labelled month to monitor and gate on."),
    start: str = _opt_month(None, "--from", "Replay: the first month."),
    end: str = _opt_month(None, "--to", "Replay: the last month."),
    trials: int = typer.Option(10, "--trials", help="TPE trials when it retrains."),
    window: int = typer.Option(
        2, "--window", help="Labelled months to retrain on: the newest validates (2-12)."
    ),
    min_improvement: float = typer.Option(
        0.0, "--min-improvement", help="RMSE the challenger must gain on --month."
    ),
    max_rounds: int = typer.Option(None, "--max-rounds", help="Cap xgboost boosting rounds."),
    seed: int = SeedOpt,
    name: str = typer.Option(MODEL_NAME, "--name", help="Registered model name."),
    summary: Path = SummaryOpt,
) -> None:
    """Monitor a month with Production; retrain, gate and promote if it drifted or degraded.
    With --from and --to, replay every month between them in order."""
    from duration import cycle as cy

    if (month is None) == (start is None and end is None) or (start is None) != (end is None):
        raise DurationError("give --month M for one month, or --from M1 --to M2 to replay")
    req = cy.CycleRequest(month or start, color, name, trials=trials, window=window, seed=seed,
                          min_improvement=min_improvement, max_rounds=max_rounds)  # fmt: skip
    cy.check(req)
    uri = _connect_and_reap(ctx)
    if month is None:
        typer.echo(cy.row(None))
        with _stop_on_signals() as stop, _watch_server(ctx, uri):
            rows = cy.replay(_settings(ctx), req, start, end, stop, say=typer.echo)
        _write_summary(summary, [asdict(r) for r in rows])
        return
    with _stop_on_signals() as stop, _watch_server(ctx, uri):
        r = cy.run(_settings(ctx), req, stop)
    _write_summary(summary, asdict(r))
    again = " (decided before; nothing changed)" if r.repeated else ""
    typer.echo(
        f"{r.month}: Production v{r.champion_version} {r.verdict} -> {r.action}{again}: "
        f"{r.reason}; Production is v{r.production_version}"
    )


@app.command()
def pipeline(
    ctx: typer.Context,
    color: Color = ColorOpt,
    train_month: str = _opt_month("2021-01", "--train", "Training month."),
    val: str = _opt_month("2021-02", "--val", "Validation month."),
    test: str = _opt_month("2021-03", "--test", "Test month."),
    features: FeatureSet = FeaturesOpt,
    trials: int = typer.Option(30, "--trials", help="Number of TPE trials."),
    seed: int = SeedOpt,
    max_rounds: int = typer.Option(None, "--max-rounds", help="Cap xgboost boosting rounds."),
    backend: str = BackendOpt,
    parallelism: int = ParallelismOpt,
    spark_master: str = MasterOpt,
    baselines: str = typer.Option(
        "all", "--baselines", help="all, none, or kinds joined by commas (linear,xgboost)."
    ),
    budget_rows: int = BudgetOpt,
    refit: int = RefitOpt,
    summary: Path = SummaryOpt,
) -> None:
    """Run download -> prepare -> vectorize -> baselines -> tune -> register -> promote."""
    from duration.config import parse_baselines

    chosen = parse_baselines(baselines)
    from duration import pipeline as pl  # light: the ML stack loads when it runs

    req = pl.PipelineRequest(
        color,
        train_month,
        val,
        test,
        features,
        trials,
        seed,
        max_rounds=max_rounds,
        backend=backend,
        parallelism=parallelism,
        spark_master=spark_master,
        baselines=chosen,
        budget_rows=budget_rows,
        refit=refit,
    )
    req.search_config().check()
    _preflight(ctx, req.search_config())
    uri = _connect_and_reap(ctx)
    with _stop_on_signals() as stop, _watch_server(ctx, uri):
        r = pl.run(_settings(ctx), req, stop)
    _write_summary(summary, r.summary())
    _report_pipeline(r, uri, req.name)


def _report_pipeline(r, uri: str, name: str) -> None:
    """The pipeline's tables, its decision, how its search spent the budget and UI links."""
    typer.echo(_table(_pipeline_rows(r), ["step", "features", "val_rmse", "test_rmse", "run"]))
    if r.stopped:
        typer.echo(
            f"pipeline stopped during the search ({r.search['stopped']}): nothing was registered",
            err=True,
        )
        raise typer.Exit(130 if r.search["stopped"] == "interrupted" else 1)
    typer.echo(r.decision["reason"])
    if line := _budget_line(r.search.get("budget", {})):
        typer.echo(line)
    typer.echo(_table(_timing_rows(r.timings), ["stage", "seconds", "peak_rss_mb"]))
    typer.echo(f"pipeline took {r.wall_s:.0f} s (run {r.run_id}). In the MLflow UI:")
    for link in _links(uri, name):
        typer.echo(f"  {link}")
    _report_deployment(r.deployment)


def _report_deployment(d: dict) -> None:
    """After a promotion with a serving process running: what the deploy did."""
    if not d:
        return
    if d["outcome"] == "failed":
        typer.echo(f"deploy failed, the old version still serves: {d['reason']}", err=True)
        raise typer.Exit(1)
    typer.echo(f"deployed version {d['version']} at {d['url']} (was {d['previous_version']})")


def _links(uri: str, name: str) -> list[str]:
    from duration import tracking
    from duration.config import EXPERIMENT, SEARCH_EXPERIMENT

    return tracking.ui_links(uri, EXPERIMENT) + tracking.ui_links(uri, SEARCH_EXPERIMENT, name)


def _timing_rows(timings: dict) -> list[dict]:
    """The pipeline's stages: seconds and peak RSS (MB) of each, in the order they ran."""
    return [
        {"stage": name, "seconds": f"{t['seconds']:.1f}", "peak_rss_mb": f"{t['peak_rss_mb']:.0f}"}
        for name, t in timings.items()
    ]


def _budget_line(budget: dict) -> str:
    """How a search under the budget spent it ('' when its trials fit on every ride)."""
    if not budget.get("sampled"):
        return ""
    return (
        f"budget: the trials fit on {budget['trial_train_rows']:,} of {budget['train_rows']:,} "
        f"rides ({budget['trials_s']:.0f} s); the best {len(budget['refits'])} were refit on "
        f"every ride ({budget['refit_s']:.0f} s), and only those may be registered"
    )


def _pipeline_rows(r) -> list[dict]:
    """The pipeline's table: each baseline, the search's best and the registered version."""
    rows = [
        {
            "step": f"baseline {b['model']}",
            "features": b["features"],
            "val_rmse": b["val_rmse"],
            "run": b["run_id"],
        }
        for b in r.baselines
    ]
    refits = len(r.search.get("budget", {}).get("refits", []))
    rows.append(
        {
            "step": f"search best of {r.search['completed']}"
            + (f" (then {refits} refits)" if refits else ""),
            "features": r.search["features"],
            "val_rmse": r.search["best_val_rmse"],
            "run": r.search["best_run_id"],
        }
    )
    if r.registered:
        out = r.summary()
        rows.append(
            {
                "step": f"registered v{out['model_version']} ({out['stage']})",
                "features": r.search["features"],
                "val_rmse": r.registered["val_rmse"],
                "test_rmse": r.registered["test_rmse"],
                "run": r.registered["run_id"],
            }
        )
    return rows


@server_app.command("run")
def server_run(ctx: typer.Context) -> None:
    """Run the local server in the foreground (Ctrl-C stops it)."""
    from duration import server

    s = _settings(ctx)
    if server.is_healthy(s.local_uri):
        raise DurationError(
            f"a server already answers at {s.local_uri}: browse it, or stop it with "
            "`make mlflow-stop` (or pick another MLFLOW_PORT)"
        )
    if note := server.prepare_store(s.store_uri, s.server_artifacts, s.server_state, s):
        typer.echo(note, err=True)
    typer.echo(f"MLflow UI: {s.local_uri} (Ctrl-C to stop)")
    cmd = server.server_command(s.store_uri, s.server_artifacts, s.port)
    os.execve(cmd[0], cmd, {**server.store_env(s, s.store_uri), **server.LEAN_ENV})


@server_app.command("start")
def server_start(ctx: typer.Context) -> None:
    """Start the local server in the background if it is not answering."""
    from duration import server

    uri = server.ensure_server(_settings(ctx))
    typer.echo(f"MLflow server: {uri}")
    for link in _links(uri, MODEL_NAME):
        typer.echo(f"  {link}")


@server_app.command("stop")
def server_stop(ctx: typer.Context) -> None:
    """Stop the background server started by this project."""
    from duration import server

    stopped = server.stop_server(_settings(ctx))
    typer.echo("stopped" if stopped else "no background server was running")


db_app = typer.Typer(
    no_args_is_help=True,
    help="A local PostgreSQL for the tracking server (127.0.0.1, scram password in .postgres/).",
)
app.add_typer(db_app, name="db")


@db_app.command("start")
def db_start(ctx: typer.Context) -> None:
    """Initialise (once) and start the local PostgreSQL; print the backend store URI."""
    from duration import db

    st = db.start(_settings(ctx))
    typer.echo(
        f"PostgreSQL {'started' if st.started else 'already runs'} on 127.0.0.1:{st.port}"
        f"{f' as the unprivileged user {st.os_user}' if st.os_user else ''}; data in {st.data}"
    )
    typer.echo(f"  MLFLOW_BACKEND_STORE_URI={st.uri}")
    typer.echo(f"  password (scram): in {st.pgpass} (0600), read through libpq's PGPASSFILE")


@db_app.command("stop")
def db_stop(ctx: typer.Context) -> None:
    """Stop the local PostgreSQL (fast shutdown)."""
    from duration import db

    typer.echo("stopped" if db.stop(_settings(ctx)) else "PostgreSQL was not running")


@db_app.command("status")
def db_status(ctx: typer.Context) -> None:
    """Whether the local PostgreSQL runs and answers; exits 1 when it does not."""
    from duration import db

    st = db.status(_settings(ctx))
    if not st["running"]:
        hint = "`duration db start`" + ("" if st["initialised"] else " (nothing initialised yet)")
        typer.echo(f"PostgreSQL is not running: start it with {hint}")
        raise typer.Exit(1)
    typer.echo(
        f"PostgreSQL {st.get('server_version', '?')} on 127.0.0.1:{st['port']}, data {st['data']}"
    )
    typer.echo(f"  MLFLOW_BACKEND_STORE_URI={st['uri']}")
    if not st.get("answers"):
        typer.echo(f"  it does not answer: {st.get('error')}")
        raise typer.Exit(1)
    typer.echo(f"  database {db.DATABASE}: {st['size_mb']} MB")


@db_app.command("backup")
def db_backup(
    ctx: typer.Context,
    out: Path = typer.Option(None, "--out", help="Dump file (default .postgres/backups/)."),
) -> None:
    """pg_dump the local MLflow database (custom format; restore with pg_restore)."""
    from duration import db

    s = _settings(ctx)
    st = db.status(s)
    if not st["running"]:
        raise DurationError("PostgreSQL is not running: start it with `duration db start`")
    path = db.backup(s, st["uri"], out)
    typer.echo(f"backed up {st['uri']} to {path} ({path.stat().st_size / 1e6:.1f} MB)")


runs_app = typer.Typer(no_args_is_help=True, help="Runs on the tracking server.")
app.add_typer(runs_app, name="runs")


@runs_app.command("reap")
def runs_reap(ctx: typer.Context) -> None:
    """End FAILED the RUNNING runs whose process on this host no longer exists."""
    from duration import tracking

    _connect(ctx)
    reaped = tracking.reap()
    typer.echo(f"reaped {len(reaped)} run(s){': ' + ', '.join(reaped) if reaped else ''}")


spark_app = typer.Typer(no_args_is_help=True, help="A local Spark standalone cluster.")
app.add_typer(spark_app, name="spark")


@spark_app.command("up")
def spark_up(
    ctx: typer.Context, cores: int = typer.Option(2, "--cores", help="The worker's cores.")
) -> None:
    """Start a standalone master and one worker on 127.0.0.1 (pid and logs under .spark/)."""
    from duration import spark

    c = spark.start_cluster(_settings(ctx), cores)
    typer.echo(f"Spark master: {c.master_url} (UI {c.master_ui}, worker UI {c.worker_ui})")
    typer.echo(f"  duration tune --backend spark --parallelism 2 --spark-master {c.master_url}")


@spark_app.command("down")
def spark_down(ctx: typer.Context) -> None:
    """Stop the local master and worker (their whole process groups)."""
    from duration import spark

    stopped = spark.stop_cluster(_settings(ctx))
    typer.echo(f"stopped {' and '.join(stopped)}" if stopped else "no local Spark was running")


serve_app = typer.Typer(
    no_args_is_help=True, help="Serve the Production version over HTTP (behind nginx)."
)
app.add_typer(serve_app, name="serve")
NameOpt = typer.Option(MODEL_NAME, "--name", help="Registered model name.")
WaitOpt = typer.Option(0.0, "--wait", help="Seconds to wait for a deploy in progress.")


@serve_app.command("start")
def serve_start(ctx: typer.Context, name: str = NameOpt, wait: float = WaitOpt) -> None:
    """Serve models:/NAME@production on 127.0.0.1:$SERVE_PORT unless it already serves."""
    from duration import deploy

    _connect(ctx)
    st = deploy.start(_settings(ctx), name, wait)
    typer.echo(f"serving {st.name} version {st.version} at {st.url}/invocations")


@serve_app.command("status")
def serve_status(ctx: typer.Context) -> None:
    """JSON: url, model_name, version, pid, healthy (exit 1 when not healthy)."""
    from duration import serve

    st = serve.status(_settings(ctx))
    typer.echo(json.dumps(st, indent=2))
    if not st["healthy"]:
        raise typer.Exit(1)


@serve_app.command("stop")
def serve_stop(ctx: typer.Context, wait: float = WaitOpt) -> None:
    """Stop the proxy and the scoring process."""
    from duration import deploy

    stopped = deploy.stop(_settings(ctx), wait)
    typer.echo(f"stopped {' and '.join(stopped)}" if stopped else "nothing was serving")


@app.command("deploy")
def deploy_cmd(
    ctx: typer.Context,
    name: str = NameOpt,
    version: str = typer.Option(
        None, "--version", help="Serve this version and make it Production (rollback)."
    ),
    rows: int = typer.Option(200, "--rows", help="Real rides in the smoke test."),
    force: bool = typer.Option(False, "--force", help="Redeploy even if it already serves."),
    wait: float = WaitOpt,
    summary: Path = SummaryOpt,
) -> None:
    """Put the Production version (or --version N) into service: start, smoke-test, switch."""
    if version is not None and not version.isdigit():
        raise DurationError(f"--version {version!r} is not a version number: give e.g. 3")
    if rows < 1:
        raise DurationError(f"--rows {rows}: give at least 1")
    from duration import deploy

    _connect(ctx)
    d = deploy.deploy(_settings(ctx), name, version, rows, force, wait)
    _write_summary(summary, asdict(d))
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


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def _interrupt(signum, _frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning errors into one line on stderr."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM ends runs in flight KILLED, as Ctrl-C
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for key, value in MLFLOW_CLIENT_ENV.items():
        os.environ.setdefault(key, value)
    if project_run := os.environ.pop("MLFLOW_RUN_ID", None):
        # started by `mlflow run`: its run stays the project's; ours are tagged with it
        os.environ["DURATION_PROJECT_RUN_ID"] = project_run
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=argv, prog_name="duration", standalone_mode=False)
        return rc if isinstance(rc, int) else 0  # typer.Exit(n) comes back as n
    except typer.Exit as e:
        return e.exit_code
    except TyperException as e:
        hint = f" (see `{e.ctx.command_path} --help`)" if getattr(e, "ctx", None) else ""
        print(f"duration: error: {_one_line(e.format_message())}{hint}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, typer.Abort):
        print("duration: interrupted", file=sys.stderr)
        return 130
    except Stopped as e:
        print(f"duration: stopped: {_one_line(e)}", file=sys.stderr)
        return 130
    except DurationError as e:
        print(f"duration: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if os.environ.get("DURATION_DEBUG"):
            raise
        from mlflow.exceptions import MlflowException

        what = "MLflow" if isinstance(e, MlflowException) else type(e).__name__
        print(
            f"duration: error: {what}: {_one_line(e)} (set DURATION_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
