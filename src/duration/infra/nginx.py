"""nginx as the project runs it: one worker, its config, pid, logs and temp files under a
folder of its own, started in its own process group and stopped as a whole. The scoring
proxy (`duration.serving.proxy`) and the team server's TLS front (`duration.server.front`)
each write their config, then start and stop it through here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil

from duration.errors import DurationError, cause
from duration.infra.files import tail
from duration.infra.net import LOOPBACK, port_in_use
from duration.infra.proc import alive, stop_group

# What every nginx of the project starts with: one worker, its pid, log and temp files
# under its own folder (the `{head}` and `{temp_paths}` of a config).
HEAD = """daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
events {{ worker_connections 1024; }}
"""
TEMPS = ("body", "proxy", "fastcgi", "uwsgi", "scgi")


def folder_parts(folder: Path) -> dict[str, str]:
    """Make `folder`'s temp folders; the `head` and `temp_paths` of a config there."""
    folder = folder.resolve()
    for sub in TEMPS:
        (folder / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    names = {"body": "client_body"}
    temp_paths = "".join(f"    {names.get(t, t)}_temp_path {folder}/tmp/{t};\n" for t in TEMPS)
    return {"head": HEAD.format(folder=folder), "temp_paths": temp_paths}


def binary() -> str:
    """The nginx executable, or a one-line error saying how to install it."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise DurationError(
            "nginx is not installed (it fronts the scoring server): run `make install`, which "
            "installs Debian's nginx-light, or `apt-get install nginx-light`"
        )
    return found


def command(folder: Path, *args: str) -> list[str]:
    """An nginx command line for the config, pid and logs under `folder`."""
    folder = folder.resolve()
    conf, log = folder / "nginx.conf", folder / "nginx-error.log"
    return [binary(), "-p", str(folder), "-c", str(conf), "-e", str(log), *args]


def master_pid(folder: Path) -> int | None:
    """The master pid of the nginx under `folder`, or None (a stale pid file is removed)."""
    pid_file = folder / "nginx.pid"
    try:
        found = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if alive(found, "nginx"):
        return found
    stop_group(found, timeout=5.0)  # a master killed with -9 can leave its workers serving
    pid_file.unlink(missing_ok=True)
    return None


def start(folder: Path, port: int, host: str = LOOPBACK, timeout: float = 15.0) -> int:
    """Start the nginx under `folder` (its config written already); wait for `port`."""
    log = folder / "nginx-error.log"
    proc = subprocess.Popen(
        command(folder),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while not port_in_use(port, host):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_group(proc.pid)
            raise DurationError(f"nginx on port {port} did not start ({tail(log)}); see {log}")
        time.sleep(0.1)
    return proc.pid


def stop(folder: Path) -> bool:
    """Stop the nginx under `folder`; False if it was not running."""
    master = master_pid(folder)
    if master is None:
        return False
    stop_group(master)
    (folder / "nginx.pid").unlink(missing_ok=True)
    return True


def check_free(folder: Path, port: int, host: str, instead: str) -> None:
    """Refuse, before anything starts, a port that a program other than the nginx under
    `folder` holds; `instead` says how to pick another."""
    if master_pid(folder) is None and port_in_use(port, host):
        on = "" if host == LOOPBACK else f" on {host}"
        raise DurationError(f"port {port}{on} is taken by another program: stop it, or {instead}")


def _workers(master: int) -> set[int]:
    """The pids of the master's worker processes (its children)."""
    try:
        return {c.pid for c in psutil.Process(master).children()}
    except psutil.Error:
        return set()


def reload(folder: Path, master: int, timeout: float = 130.0) -> None:
    """Check the new config, reload gracefully, and wait until it serves: a worker on the
    new config runs, and every worker of the old one has finished its requests and gone.
    (Waiting only for "shutting down" titles returned too soon on a busy machine, before
    the master had even started its new worker: what the caller stopped next, a drained
    group of scoring workers, could still get requests.)"""
    check = subprocess.run(command(folder, "-t"), capture_output=True, text=True)
    if check.returncode != 0:
        raise DurationError(f"nginx refused its new config: {cause(check.stderr)}")
    old = _workers(master)
    os.kill(master, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(master, "nginx"):
        now = _workers(master)
        if now and not now & old:
            return
        time.sleep(0.05)
