"""`duration server`, `db` and `runs`: the tracking server, its PostgreSQL, and its runs."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from duration.cli import render
from duration.cli.runtime import connect, settings
from duration.errors import DurationError
from duration.infra.net import is_healthy
from duration.server import pg_databases, postgres, team, tracking_server
from duration.settings import Settings
from duration.tracking.names import MODEL_NAME

server_app = typer.Typer(no_args_is_help=True, help="The local MLflow tracking server.")
db_app = typer.Typer(
    no_args_is_help=True,
    help="A local PostgreSQL for the tracking server (127.0.0.1, scram password in .postgres/).",
)
runs_app = typer.Typer(no_args_is_help=True, help="Runs on the tracking server.")


@server_app.command("run")
def server_run(ctx: typer.Context) -> None:
    """Run the local server in the foreground (Ctrl-C stops it)."""
    s = settings(ctx)
    local = tracking_server.local(s)
    if is_healthy(local.url):
        raise DurationError(
            f"a server already answers at {local.url}: browse it, or stop it with "
            "`make mlflow-stop` (or pick another MLFLOW_PORT)"
        )
    if note := tracking_server.prepare_store(local, s):
        typer.echo(note, err=True)
    typer.echo(f"MLflow UI: {local.url} (Ctrl-C to stop)")
    cmd = tracking_server.command(local)
    env = {**tracking_server.store_env(s, local.store), **tracking_server.LEAN_ENV}
    os.execve(cmd[0], cmd, env)


@server_app.command("start")
def server_start(
    ctx: typer.Context,
    team_mode: bool = typer.Option(
        False, "--team", help="Users, roles and TLS in front (docs/guides/team-server.md)."
    ),
    host: str = typer.Option(
        None, "--host", help="The TLS front's address (--team only) [env DURATION_TEAM_HOST]."
    ),
) -> None:
    """Start the local server in the background if it is not answering."""
    if host is not None and not team_mode:
        raise DurationError(
            f"--host {host} needs --team: only a server with users and TLS may listen beyond "
            "127.0.0.1 (the plain server has no authentication)"
        )
    if team_mode:
        return _team_start(settings(ctx).but({}, tracking={"team_host": host}))
    uri = connect(ctx)
    typer.echo(f"MLflow server: {uri}")
    for link in render.links(uri, MODEL_NAME):
        typer.echo(f"  {link}")


def _team_start(s: Settings) -> None:
    url = team.start(s)
    f = team.files(s)
    typer.echo(f"team server: {url} (users, roles, TLS; MLflow behind on {s.tracking.local_uri})")
    ca = s.paths.tls.resolve() / "ca.pem"
    typer.echo(f"  CA file for clients: {ca} (MLFLOW_TRACKING_SERVER_CERT_PATH)")
    typer.echo(f"  admin password: in {f.admin_password.resolve()} (0600)")
    typer.echo("  add people with `duration users add NAME --role editor|reader`")


@server_app.command("stop")
def server_stop(ctx: typer.Context) -> None:
    """Stop the background server started by this project (and the team server's front)."""
    front = team.stop(settings(ctx))
    stopped = tracking_server.stop(settings(ctx))
    typer.echo("stopped" if stopped or front else "no background server was running")


@db_app.command("start")
def db_start(ctx: typer.Context) -> None:
    """Initialise (once) and start the local PostgreSQL; print the backend store URI."""
    st = postgres.start(settings(ctx))
    typer.echo(
        f"PostgreSQL {'started' if st.started else 'already runs'} on 127.0.0.1:{st.port}"
        f"{f' as the unprivileged user {st.os_user}' if st.os_user else ''}; data in {st.data}"
    )
    typer.echo(f"  MLFLOW_BACKEND_STORE_URI={st.uri}")
    typer.echo(f"  password (scram): in {st.pgpass} (0600), read through libpq's PGPASSFILE")


@db_app.command("stop")
def db_stop(ctx: typer.Context) -> None:
    """Stop the local PostgreSQL (fast shutdown)."""
    typer.echo("stopped" if postgres.stop(settings(ctx)) else "PostgreSQL was not running")


@db_app.command("status")
def db_status(ctx: typer.Context) -> None:
    """Whether the local PostgreSQL runs and answers; exits 1 when it does not."""
    st = pg_databases.status(settings(ctx))
    if not st.running:
        hint = "`duration db start`" + ("" if st.initialised else " (nothing initialised yet)")
        typer.echo(f"PostgreSQL is not running: start it with {hint}")
        raise typer.Exit(1)
    typer.echo(f"PostgreSQL {st.server_version or '?'} on 127.0.0.1:{st.port}, data {st.data}")
    typer.echo(f"  MLFLOW_BACKEND_STORE_URI={st.uri}")
    if not st.answers:
        typer.echo(f"  it does not answer: {st.error}")
        raise typer.Exit(1)
    typer.echo(f"  database {postgres.DATABASE}: {st.size_mb} MB")


@db_app.command("backup")
def db_backup(
    ctx: typer.Context,
    out: Path = typer.Option(None, "--out", help="Dump file (default .postgres/backups/)."),
) -> None:
    """pg_dump the local MLflow database (custom format; restore with pg_restore)."""
    s = settings(ctx)
    st = pg_databases.status(s)
    if not st.running or st.uri is None:
        raise DurationError("PostgreSQL is not running: start it with `duration db start`")
    path = pg_databases.backup(s, st.uri, out)
    typer.echo(f"backed up {st.uri} to {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if st.auth:  # the team server's users and permissions
        to = None if out is None else out.with_suffix(".auth.dump")
        auth = pg_databases.backup(s, st.auth, to)
        typer.echo(f"backed up {st.auth} to {auth} ({auth.stat().st_size / 1e6:.1f} MB)")


@runs_app.command("reap")
def runs_reap(ctx: typer.Context) -> None:
    """End FAILED the RUNNING runs whose process on this host no longer exists."""
    from duration.tracking.reap import reap  # deferred: MLflow takes seconds to import

    connect(ctx)
    reaped = reap()
    typer.echo(f"reaped {len(reaped)} run(s){': ' + ', '.join(reaped) if reaped else ''}")
