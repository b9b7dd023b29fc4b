"""A local PostgreSQL for a team's tracking server: initialise once, start on 127.0.0.1 with
scram passwords, report, back up, stop. The password lives in a 0600 pgpass file, never in a
URI, a command line or a log."""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from duration.errors import DurationError
from duration.infra.files import atomic_path, exclusive, write_atomic
from duration.infra.net import free_port, port_in_use
from duration.settings import Settings

ROLE = "duration"  # the database role MLflow connects as
DATABASE = "mlflow"
DEFAULT_PG_PORT = 5432


def auth_name(database: str) -> str:
    """The team server's database of users and permissions, beside the store `database`."""
    return f"{database}_auth"


AUTH_DATABASE = auth_name(DATABASE)


@dataclass(frozen=True, kw_only=True)
class DbState:
    """What `db start` reports and records in `.postgres/db.json`."""

    uri: str
    port: int
    data: str
    pgpass: str
    os_user: str | None
    started: bool  # False when it was already running


def bin_dir() -> Path:
    """The newest PostgreSQL server programs (Debian keeps them off PATH), or one line."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    if initdb := shutil.which("initdb"):
        return Path(initdb).parent
    raise DurationError(
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed: run `make system` "
        "(Debian package postgresql), or `apt-get install postgresql`"
    )


def uri(port: int) -> str:
    """The SQLAlchemy URI of the local cluster's MLflow database (no password in it)."""
    return f"postgresql://{ROLE}@127.0.0.1:{port}/{DATABASE}"


def os_user(settings: Settings) -> str | None:
    """None when not root; as root, the unprivileged account the cluster runs as (initdb
    refuses root; created as a system user when missing)."""
    if os.geteuid() != 0:
        return None
    name = settings.postgres.os_user
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            check=True,
            capture_output=True,
        )
    return name


def _as(user: str | None, cmd: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


def run(
    user: str | None, cmd: list[str], what: str, hint: str = "", **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program (as `user`); one line with its own reason if it fails."""
    proc = subprocess.run(_as(user, cmd), capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise DurationError(f"{what} failed: {reason(proc.stderr or proc.stdout)}{hint}")
    return proc


def _check_reachable(path: Path, user: str) -> None:
    """Every folder above `path` must let `user` in; else one line saying which does not."""
    entry = pwd.getpwnam(user)
    for folder in reversed(path.resolve().parents):
        st = folder.stat()
        if st.st_uid == entry.pw_uid:
            continue
        bit = stat.S_IXGRP if st.st_gid == entry.pw_gid else stat.S_IXOTH
        if not st.st_mode & bit:
            raise DurationError(
                f"the cluster runs as the unprivileged user {user!r} (initdb refuses root), "
                f"and it cannot enter {folder}: `chmod o+x {folder}`, or set DURATION_HOME "
                "to a folder other users can enter"
            )


class Cluster:
    """The files of the local cluster, all under `settings.paths.pg_state` (`.postgres/`)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = settings.paths.pg_state.resolve()
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.pgpass = self.root / "pgpass"
        self.state_file = self.root / "db.json"
        self.backups = self.root / "backups"
        self.lock = self.root / ".lock"

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def last_port(self) -> int | None:
        """The port `db start` recorded last (`db.json`), if any."""
        try:
            return int(json.loads(self.state_file.read_text())["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def running_pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def running_port(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[3])
        except (OSError, ValueError, IndexError):
            return None


def _write_pgpass(path: Path, password: str) -> None:
    """The password, as libpq reads it (PGPASSFILE), in a file only its owner can read."""
    text = f"127.0.0.1:*:*:{ROLE}:{password}\nlocalhost:*:*:{ROLE}:{password}\n"
    write_atomic(path, text, mode=0o600)


def read_password(pgpass: Path) -> str:
    return pgpass.read_text().splitlines()[0].rsplit(":", 1)[1]


def initialise(c: Cluster, user: str | None) -> None:
    """initdb into a scratch folder (scram only, loopback only, no Unix socket), then move it
    into place: a failed initdb leaves nothing behind."""
    c.root.mkdir(parents=True, exist_ok=True)
    os.chmod(c.root, 0o711)  # the cluster's user enters; only root reads pgpass and dumps
    if user:
        _check_reachable(c.root, user)
    password = secrets.token_urlsafe(24)
    scratch = c.root / ".data.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700)
    pwfile = scratch / "pw"
    pwfile.write_text(password + "\n")
    if user:
        entry = pwd.getpwnam(user)
        for p in (scratch, pwfile):
            os.chown(p, entry.pw_uid, entry.pw_gid)
    os.chmod(pwfile, 0o600)
    data = scratch / "data"
    try:
        run(
            user,
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(data),
                "-U",
                ROLE,
                "--pwfile",
                str(pwfile),
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            "initdb",
            f"; nothing was kept: fix that (free space under {c.root}?) and run "
            "`duration db start` again",
        )
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# duration: loopback only, passwords only, no Unix socket\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "password_encryption = 'scram-sha-256'\n"
            )
        _write_pgpass(c.pgpass, password)
        os.replace(data, c.data)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def reason(text: str, fallback: int = 2) -> str:
    """Why a PostgreSQL program or server failed, from its output: the last FATAL, PANIC or
    "error:" line, with the line before it (where PostgreSQL puts the cause, as in "invalid
    value for parameter ..."); else the last `fallback` lines."""
    lines = [" ".join(ln.split()) for ln in text.splitlines() if ln.strip()]
    lines = [re.sub(r"^\S+ \S+ \S+ \[\d+\] ", "", ln) for ln in lines]  # time, zone, pid
    fatal = [
        i for i, ln in enumerate(lines) if ln.startswith(("FATAL:", "PANIC:")) or ": error: " in ln
    ]
    if not fatal:
        return " ".join(lines[-fallback:])[:300] or "no output"
    i = fatal[-1]
    return " / ".join(lines[max(i - 1, 0) : i + 1])[:300]


def last_error(log: Path) -> str:
    """Why the server would not start, from its log (see `reason`)."""
    try:
        return reason(log.read_text(errors="replace"), fallback=1)
    except OSError:
        return "nothing (no log)"


def choose_port(c: Cluster) -> int:
    """DURATION_PG_PORT if set (it must be free); else the port used last, else 5432; a free
    port when that one is taken."""
    wanted = c.settings.postgres.port
    if wanted is not None:
        if port_in_use(wanted):
            raise DurationError(
                f"DURATION_PG_PORT={wanted} is taken by another program: pick another port, "
                "or unset it to use a free one"
            )
        return wanted
    port = c.last_port() or DEFAULT_PG_PORT
    return free_port() if port_in_use(port) else port


def connect(port: int, dbname: str, pgpass: Path) -> Any:
    import psycopg  # deferred: libpq loads only when a database is opened

    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user=ROLE,
        dbname=dbname,
        password=read_password(pgpass),
        connect_timeout=10,
        autocommit=True,
    )


def exists(conn: Any, name: str) -> bool:
    return bool(conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone())


def create_missing(conn: Any, name: str) -> None:
    from psycopg import sql  # deferred, as psycopg above

    if not exists(conn, name):
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _state(c: Cluster, port: int, user: str | None, started: bool) -> DbState:
    return DbState(
        uri=uri(port),
        port=port,
        data=str(c.data),
        pgpass=str(c.pgpass),
        os_user=user,
        started=started,
    )


def start(settings: Settings, wait: float = 60.0) -> DbState:
    """Initialise the cluster once, start it on 127.0.0.1, and create the MLflow database."""
    c = Cluster(settings)
    c.root.mkdir(parents=True, exist_ok=True)
    with exclusive(c.lock, wait, f"another `duration db` command holds {c.lock}: try again"):
        user = os_user(settings)
        if c.running_pid() and (port := c.running_port()):
            return _state(c, port, user, started=False)
        port = choose_port(c)
        if not c.initialised():
            initialise(c, user)
        if user:
            _check_reachable(c.data, user)
        if user:
            with open(c.log, "a"):
                pass
            entry = pwd.getpwnam(user)
            os.chown(c.log, entry.pw_uid, entry.pw_gid)
        try:
            run(
                user,
                [
                    str(bin_dir() / "pg_ctl"),
                    "-D",
                    str(c.data),
                    "-l",
                    str(c.log),
                    "-o",
                    f"-p {port}",
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                f"starting PostgreSQL on 127.0.0.1:{port}",
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except DurationError as e:
            raise DurationError(f"{e}; the server's log says: {last_error(c.log)} ({c.log})") from e
        with connect(port, "postgres", c.pgpass) as conn:
            create_missing(conn, DATABASE)
        state = _state(c, port, user, started=True)
        with atomic_path(c.state_file) as tmp:
            tmp.write_text(json.dumps(asdict(state), indent=2))
        return state


def stop(settings: Settings, wait: float = 60.0) -> bool:
    """Stop the cluster (fast shutdown: sessions end, work is rolled back); False if it was
    not running."""
    c = Cluster(settings)
    if not c.initialised() or not c.running_pid():
        return False
    with exclusive(c.lock, wait, f"another `duration db` command holds {c.lock}: try again"):
        run(
            os_user(settings),
            [str(bin_dir() / "pg_ctl"), "-D", str(c.data), "-m", "fast", "-w", "-t", "60", "stop"],
            "stopping PostgreSQL",
        )
    return True


def local_pgpass(settings: Settings) -> Path | None:
    """The local cluster's pgpass file, when it exists."""
    p = Cluster(settings).pgpass
    return p if p.exists() else None
