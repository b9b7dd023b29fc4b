"""`duration spark`: a local standalone Spark cluster on 127.0.0.1."""

from __future__ import annotations

import typer

from duration.cli.runtime import settings
from duration.spark import cluster

spark_app = typer.Typer(no_args_is_help=True, help="A local Spark standalone cluster.")


@spark_app.command("up")
def spark_up(
    ctx: typer.Context, cores: int = typer.Option(2, "--cores", help="The worker's cores.")
) -> None:
    """Start a standalone master and one worker on 127.0.0.1 (pid and logs under .spark/)."""
    c = cluster.start_cluster(settings(ctx), cores)
    typer.echo(f"Spark master: {c.master_url} (UI {c.master_ui}, worker UI {c.worker_ui})")
    typer.echo(f"  duration tune --backend spark --parallelism 2 --spark-master {c.master_url}")


@spark_app.command("down")
def spark_down(ctx: typer.Context) -> None:
    """Stop the local master and worker (their whole process groups)."""
    stopped = cluster.stop_cluster(settings(ctx))
    typer.echo(f"stopped {' and '.join(stopped)}" if stopped else "no local Spark was running")
