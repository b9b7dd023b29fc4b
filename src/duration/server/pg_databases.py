"""The local PostgreSQL's databases: connect with the password from pgpass, create a
database when missing (the team server's `mlflow_auth`), report, and back one up with
pg_dump."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from duration.errors import DurationError, redact
from duration.infra.files import atomic_path, utc_stamp
from duration.server.postgres import (
    AUTH_DATABASE,
    DATABASE,
    Cluster,
    bin_dir,
    connect,
    create_missing,
    exists,
    local_pgpass,
    run,
    uri,
)
from duration.settings import Settings


def libpq_uri(store_uri: str) -> str:
    """A SQLAlchemy `postgresql+driver://` URI as libpq tools (pg_dump) take it."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", store_uri)


def with_database(store_uri: str, name: str) -> str:
    """`store_uri` with database `name` in place of its own."""
    return urlsplit(store_uri)._replace(path=f"/{name}").geturl()


def ensure_database(settings: Settings, store_uri: str, name: str) -> str:
    """The URI of database `name` on the server of `store_uri` (same user, password from
    pgpass), created when missing."""
    import psycopg  # deferred: libpq loads only when a database is opened

    admin = with_database(libpq_uri(store_uri), "postgres")
    pgpass = local_pgpass(settings)
    if pgpass and "PGPASSFILE" not in os.environ:
        admin += f"?passfile={pgpass}"
    try:
        with psycopg.connect(admin, connect_timeout=10, autocommit=True) as conn:
            create_missing(conn, name)
    except psycopg.Error as e:
        raise DurationError(
            f"the auth database {name} on {redact(store_uri)} cannot be made: "
            f"{' '.join(str(e).split())[:200]}; is PostgreSQL running (`duration db start`)?"
        ) from None
    return with_database(store_uri, name)


@dataclass(frozen=True, kw_only=True)
class DbStatus:
    """What `duration db status` reports: whether the cluster runs and answers, and where."""

    initialised: bool
    running: bool = False
    data: str
    port: int | None = None
    uri: str | None = None
    pgpass: str | None = None
    answers: bool = False
    server_version: str | None = None
    size_mb: float | None = None
    auth: str | None = None  # the team server's auth database, when it exists
    error: str | None = None


def status(settings: Settings) -> DbStatus:
    """Whether the cluster runs, where, and how big its MLflow database is."""
    c = Cluster(settings)
    port = c.running_port() if c.running_pid() else None
    if port is None:
        return DbStatus(initialised=c.initialised(), data=str(c.data))
    running = DbStatus(
        initialised=True,
        running=True,
        data=str(c.data),
        port=port,
        uri=uri(port),
        pgpass=str(c.pgpass),
    )
    try:
        with connect(port, DATABASE, c.pgpass) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            auth = with_database(uri(port), AUTH_DATABASE) if exists(conn, AUTH_DATABASE) else None
    except Exception as e:  # noqa: BLE001 - reported, not raised: status describes
        return replace(running, error=" ".join(str(e).split())[:200])
    return replace(
        running, answers=True, server_version=str(version), size_mb=round(size / 1e6, 1), auth=auth
    )


def backup(settings: Settings, store_uri: str, dest: Path | None = None) -> Path:
    """`pg_dump` the database of `store_uri` (custom format) into `dest`, atomically."""
    c = Cluster(settings)
    if dest is None:
        name = urlsplit(libpq_uri(store_uri)).path.strip("/") or DATABASE
        dest = c.backups / f"{name}-{utc_stamp()}.dump"
    env = dict(os.environ)
    if "PGPASSFILE" not in env and (pgpass := local_pgpass(settings)):
        env["PGPASSFILE"] = str(pgpass)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        run(
            None,
            [
                *(str(bin_dir() / "pg_dump"), "--format=custom", "--file", str(tmp)),
                *("--dbname", libpq_uri(store_uri)),
            ],
            f"pg_dump of {redact(store_uri)}",
            env=env,
        )
        os.chmod(tmp, 0o600)
    return dest
