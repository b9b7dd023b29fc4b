"""A home's tracking platform as one thing: its store (SQLite in the home, or the local
PostgreSQL), the MLflow server on it (plain, or the team server with auth and TLS), and
everything stopped again, each part as a whole process group."""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

from duration.server import front, pg_databases, postgres, team, tracking_server
from duration.settings import Settings


class Store(StrEnum):
    """Where the tracking server keeps its runs."""

    sqlite = "sqlite"  # mlflow.db in the home
    postgres = "postgres"  # the local PostgreSQL cluster (`duration db start`)


def start(
    settings: Settings, store: Store = Store.sqlite, *, team_mode: bool = False, workers: int = 1
) -> tuple[Settings, str]:
    """Start the store and the server; the settings that point at them, and the URL clients
    use (the TLS front's for a team)."""
    if store is Store.postgres:
        uri = postgres.start(settings).uri
        settings = settings.but({}, tracking={"store_uri": uri})
    if team_mode:
        return settings, team.start(settings, workers=workers)
    server = replace(tracking_server.local(settings), workers=workers)
    tracking_server.start(server, settings)
    return settings, server.url


def stop(settings: Settings) -> list[str]:
    """Stop the TLS front, the server and the local PostgreSQL, whichever run; what was
    stopped."""
    stopped = ["TLS front"] if front.stop(settings) else []
    stopped += ["tracking server"] if tracking_server.stop(settings) else []
    if pg_databases.status(settings).running:
        stopped += ["PostgreSQL"] if postgres.stop(settings) else []
    return stopped
