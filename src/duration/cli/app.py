"""The `duration` Typer app, wired from the command modules: each command parses, calls
one function and reports. `app` is also the API: `typer.main.get_command(app)`."""

from __future__ import annotations

from pathlib import Path

import typer

from duration.cli import (
    automate,
    data,
    monitor,
    observe,
    pipeline,
    registry,
    serve,
    server,
    spark,
    train,
    users,
)
from duration.settings import Settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Predict NYC taxi ride durations, tracked end to end in MLflow.",
)


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
    flags = {
        "paths.data_dir": "--data-dir",
        "paths.tlc_url": "--tlc-url",
        "tracking.uri": "--tracking-uri",
    }
    ctx.obj = Settings.from_env().but(
        flags,
        paths={"data_dir": data_dir, "tlc_url": tlc_url},
        tracking={"uri": tracking_uri},
    )


for command in (
    data.download,
    data.prepare,
    data.vectorize,
    train.train,
    train.tune,
    registry.register,
    registry.promote,
    registry.predict,
    monitor.monitor,
    monitor.cycle,
    monitor.report,
    pipeline.pipeline,
    serve.deploy,
    serve.traffic,
):
    app.command()(command)
app.add_typer(server.server_app, name="server")
app.add_typer(server.db_app, name="db")
app.add_typer(server.runs_app, name="runs")
app.add_typer(spark.spark_app, name="spark")
app.add_typer(serve.serve_app, name="serve")
app.add_typer(monitor.ab_app, name="ab")
app.add_typer(users.users_app, name="users")
app.add_typer(automate.automate_app, name="automate")
app.add_typer(observe.observe_app, name="observe")
