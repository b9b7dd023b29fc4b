"""The local PostgreSQL (`duration db`) and tracking servers on it: real clusters, no mocks."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from duration.errors import DurationError
from duration.infra.net import free_port
from duration.server import pg_databases, tracking_server
from duration.server import postgres as db
from duration.settings import Paths, Postgres, Settings
from tests.helpers import assert_one_line_error, pg_home, run_cli

# Under pytest-xdist (`make test`: -n 2 --dist loadgroup) this module runs on one worker,
# so its expensive session fixture (the PostgreSQL cluster and its server) is built once.
pytestmark = pytest.mark.xdist_group("postgres")


def home_env(home: Path, **extra) -> dict:
    return {
        "DURATION_HOME": str(home),
        "MLFLOW_TRACKING_URI": None,
        "MLFLOW_BACKEND_STORE_URI": None,
        "PGPASSFILE": None,
        **extra,
    }


def test_db_runs_unprivileged_on_loopback_with_a_scram_password(postgres_cluster, pg_server):
    """The cluster the team server runs on (pg_server gives its database the MLflow schema)."""
    s, st = postgres_cluster
    again = run_cli("db", "start", env=home_env(s.paths.home), cwd=s.paths.home)
    assert again.returncode == 0 and "already runs" in again.stdout, again.stderr
    assert f"MLFLOW_BACKEND_STORE_URI={st.uri}" in again.stdout
    status = run_cli("db", "status", env=home_env(s.paths.home), cwd=s.paths.home)
    assert status.returncode == 0 and st.uri in status.stdout, status.stdout + status.stderr

    pid = db.Cluster(s).running_pid()
    proc = psutil.Process(pid)
    if os.geteuid() == 0:  # initdb refuses root: the cluster runs as an unprivileged user
        assert proc.username() == Settings().postgres.os_user != "root"
    listening = [c for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}
    assert not proc.net_connections("unix")  # no Unix socket: passwords over TCP only
    assert Path(st.pgpass).stat().st_mode & 0o777 == 0o600

    import psycopg

    for password in ("", "not-the-password"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                host="127.0.0.1",
                port=st.port,
                user=db.ROLE,
                dbname=db.DATABASE,
                password=password,
                connect_timeout=5,
            ).close()
    env = {**os.environ, "PGPASSFILE": st.pgpass}
    with psycopg.connect(f"{st.uri}?passfile={st.pgpass}", connect_timeout=5) as conn:
        method = conn.execute("SHOW password_encryption").fetchone()[0]
    assert method == "scram-sha-256"

    out = run_cli("db", "backup", env=home_env(s.paths.home), cwd=s.paths.home)
    assert out.returncode == 0, out.stderr
    dump = Path(out.stdout.split(" to ")[1].split(" (")[0])
    assert dump.parent == s.paths.pg_state.resolve() / "backups"
    assert dump.stat().st_mode & 0o777 == 0o600
    listing = subprocess.run(
        [str(db.bin_dir() / "pg_restore"), "--list", str(dump)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "TABLE public experiments" in listing and "TABLE public model_versions" in listing


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the cluster as another user")
def test_a_home_the_cluster_user_cannot_enter_is_one_line(tmp_path):
    """pytest's own folders are 0700: the unprivileged user cannot reach a cluster there."""
    home = tmp_path / "home"
    home.mkdir()
    out = run_cli("db", "start", env=home_env(home, DURATION_PG_PORT=str(free_port())), cwd=home)
    assert_one_line_error(out, "cannot enter", "chmod o+x", "DURATION_HOME")
    assert not (home / ".postgres" / "data").exists()  # nothing half-initialised
    assert not list((home / ".postgres").glob(".data.partial*"))


def _file_size_limit() -> None:
    """In the child: files stop at 4 MB, as on a full disk (a write past it fails, EFBIG)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_an_initdb_that_fails_is_one_line_and_keeps_nothing():
    """A real initdb that cannot write its first 16 MB WAL segment: one line with initdb's own
    reason and what to do; no cluster, no scratch folder and no password are left."""
    with pg_home("duration-pg-initdb-") as home:
        env = home_env(home, DURATION_PG_PORT=str(free_port()))
        out = run_cli("db", "start", env=env, cwd=home, preexec_fn=_file_size_limit)
        assert_one_line_error(out, "initdb failed", "File too large", "duration db start")
        root = home / ".postgres"
        assert not (root / "data").exists() and not list(root.glob(".data.partial*"))
        assert not db.Cluster(Settings(paths=Paths(home=home))).pgpass.exists()
        assert not [
            p
            for p in psutil.process_iter(["name"])
            if p.info["name"] == "postgres" and str(home) in " ".join(p.cmdline())
        ]


def test_a_taken_port_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli("db", "start", env=home_env(tmp_path, DURATION_PG_PORT=str(port)))
    assert_one_line_error(out, f"DURATION_PG_PORT={port}", "taken")


def _downgrade(uri: str, env: dict) -> None:
    """Take a store one MLflow schema revision back, as an older MLflow left it."""
    code = (
        "import sys; from alembic import command; "
        "from mlflow.store.db.utils import _get_alembic_config; "
        "command.downgrade(_get_alembic_config(sys.argv[1]), '-1')"
    )
    exe = Path(sys.executable)
    subprocess.run([str(exe), "-c", code, uri], check=True, capture_output=True, env=env)


def _revision(uri: str, passfile: str) -> str:
    """The store's MLflow schema revision (alembic's bookkeeping row)."""
    import psycopg

    with psycopg.connect(f"{uri}?passfile={passfile}") as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_a_schema_upgrade_takes_a_pg_dump_first(postgres_cluster, pg_server, tmp_path, monkeypatch):
    """A store at an older MLflow schema: `server start` backs it up with pg_dump, says
    where, upgrades it, and serves. A server on another store than the one asked for is
    refused."""
    import psycopg

    home = tmp_path
    env = home_env(home, MLFLOW_PORT=str(free_port()))
    s, st = postgres_cluster
    name = f"upgrade_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{st.uri}?passfile={st.pgpass}", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    uri = st.uri.rsplit("/", 1)[0] + f"/{name}"
    env["PGPASSFILE"] = st.pgpass
    monkeypatch.setenv("PGPASSFILE", st.pgpass)
    penv = {**os.environ, **{k: v for k, v in env.items() if v is not None}}
    # a copy of the team server's store (a `db backup` restored), one MLflow schema back
    dump = pg_databases.backup(s, st.uri, home / "team.dump")
    subprocess.run(
        [str(db.bin_dir() / "pg_restore"), "--no-owner", "--dbname", uri, str(dump)],
        check=True,
        capture_output=True,
        env=penv,
    )
    _downgrade(uri, penv)
    latest, older = _revision(st.uri, st.pgpass), _revision(uri, st.pgpass)
    assert latest != older

    env["MLFLOW_BACKEND_STORE_URI"] = uri
    out = run_cli("server", "start", env=env, cwd=home)
    try:
        assert out.returncode == 0, out.stderr
        said = [line for line in out.stderr.splitlines() if "backed up" in line]
        assert (
            len(said) == 1
            and f"then upgraded its MLflow schema from {older} to {latest}" in said[0]
        )
        saved = Path(said[0].split(" to ")[1].split(", then")[0])
        assert saved.is_file() and saved.stat().st_size > 0
        assert _revision(uri, st.pgpass) == latest
        assert saved.suffix == ".dump"
        refused = run_cli("runs", "reap", env={**env, "MLFLOW_BACKEND_STORE_URI": None}, cwd=home)
        assert_one_line_error(refused, "runs on", "not on", "duration server stop")
    finally:
        run_cli("server", "stop", env=env, cwd=home)


def test_a_sqlite_store_is_backed_up_whole(tmp_path):
    """Before upgrading a SQLite store, `backup_store` copies it with SQLite's online backup."""
    import sqlite3

    src = tmp_path / "mlflow.db"
    with sqlite3.connect(src) as conn:
        conn.execute("CREATE TABLE runs (id TEXT)")
        conn.executemany("INSERT INTO runs VALUES (?)", [(str(i),) for i in range(100)])
    saved = tracking_server.backup_store(Settings(), f"sqlite:///{src}", tmp_path / "backups")
    assert saved.parent == tmp_path / "backups" and saved.suffix == ".db"
    with sqlite3.connect(saved) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (100,)
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # no partial file left


def test_a_store_that_does_not_answer_is_one_line(tmp_path):
    """A PostgreSQL store nobody listens on: the server start names it, says why (the
    driver's own error) and how to start the local one."""
    uri = f"postgresql://duration@127.0.0.1:{free_port()}/mlflow"
    env = home_env(tmp_path, MLFLOW_PORT=str(free_port()), MLFLOW_BACKEND_STORE_URI=uri)
    out = run_cli("server", "start", env=env, cwd=tmp_path)
    assert_one_line_error(out, f"the tracking store {uri} cannot be opened", "make postgres")
    assert "OperationalError" in out.stderr
    assert not (tmp_path / ".mlflow" / "server.pid").exists()  # no server was started


def test_a_backup_with_no_cluster_running_is_one_line(tmp_path):
    out = run_cli("db", "backup", env=home_env(tmp_path), cwd=tmp_path)
    assert_one_line_error(out, "PostgreSQL is not running", "duration db start")
    assert not (tmp_path / ".postgres" / "backups").exists()


def test_a_busy_db_lock_is_one_line_and_starts_nothing(tmp_path):
    """Another `duration db` command (another process) holds the cluster's lock: this one
    waits, then says so in one line, and has initialised nothing."""
    import sys

    s = Settings(paths=Paths(home=tmp_path))
    lock = db.Cluster(s).lock
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
            "lock.acquire(); print('held', flush=True); time.sleep(60)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DurationError, match="another `duration db` command holds") as e:
            db.start(s, wait=0.5)
        assert str(lock) in str(e.value) and "try again" in str(e.value)
        assert not db.Cluster(s).initialised()
    finally:
        holder.kill()
        holder.wait()


def test_a_failed_schema_upgrade_keeps_the_backup_and_says_where(
    mlflow_server, mlflow_root, tmp_path
):
    """A SQLite store whose bookkeeping says one MLflow schema back, but whose tables are
    already at the latest: the upgrade fails. One line names the cause and the backup, the
    backup holds the store as it was, and the next start checks again (no marker)."""
    import sqlite3
    from importlib.util import find_spec

    from alembic.script import ScriptDirectory

    store, state = tmp_path / "mlflow.db", tmp_path / "state"
    with sqlite3.connect(mlflow_root / "mlflow.db") as live, sqlite3.connect(store) as copy:
        live.backup(copy)  # the session server's store: at the latest schema, with runs
    migrations = Path(find_spec("mlflow").submodule_search_locations[0]) / "store/db_migrations"
    script = ScriptDirectory(str(migrations))
    older = script.get_revision(script.get_current_head()).down_revision
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (older,))
    with pytest.raises(DurationError) as e:  # a new state folder: this store was never checked
        server = tracking_server.Server(
            store=tracking_server.sqlite_store(store),
            artifacts=tmp_path / "art",
            state=state,
            port=free_port(),
        )
        tracking_server.prepare_store(server, Settings())
    message = str(e.value)
    assert "\n" not in message and f"upgrading the MLflow schema of sqlite:///{store}" in message
    saved = Path(message.rsplit("the store as it was is saved at ", 1)[1])
    assert saved.parent == (state / "backups").resolve() and saved.suffix == ".db"
    with sqlite3.connect(saved) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (older,)
    assert not list(state.glob("store-*.checked"))


@pytest.mark.server  # initdb and pg_ctl: a real PostgreSQL cluster
def test_a_cluster_that_will_not_start_says_why_from_its_log():
    """A hand-edited postgresql.conf with a bad value: `db start` gives one line with the
    server log's own reason and the log's path, and leaves nothing running."""

    with pg_home("duration-pg-bad-") as home:
        s = Settings(paths=Paths(home=home), postgres=Postgres(port=free_port()))
        c = db.Cluster(s)
        db.initialise(c, db.os_user(s))
        with open(c.data / "postgresql.conf", "a") as conf:
            conf.write("shared_buffers = 'plenty'\n")
        with pytest.raises(DurationError) as e:
            db.start(s)
        message = str(e.value)
        assert (
            "\n" not in message and f"starting PostgreSQL on 127.0.0.1:{s.postgres.port}" in message
        )
        assert 'invalid value for parameter "shared_buffers": "plenty"' in message
        assert str(c.log) in message
        assert c.running_pid() is None and not c.state_file.exists()
