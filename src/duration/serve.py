"""Serve a registered version over HTTP: MLflow's scoring server behind an nginx proxy.

Clients talk to the proxy on 127.0.0.1:SERVE_PORT. Each version runs as its own
`mlflow models serve` process on a free loopback port. Switching versions rewrites the
proxy's upstream and reloads nginx gracefully (SIGHUP): new connections go to the new
version while in-flight requests finish on the old one, so no request is dropped.
State (serve.json), config, pid and log files live under `.mlflow/serve/`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from duration.config import Settings
from duration.errors import DurationError, cause
from duration.files import atomic_path
from duration.server import is_healthy, stop_pid

NGINX_CONF = """# Written by duration.serve: do not edit (rewritten on every deploy).
daemon off;
worker_processes 1;
pid {state}/nginx.pid;
error_log {state}/nginx-error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    # Bodies and answers stream through: nginx's workers never write a temp file.
    client_max_body_size 64m;
    client_body_temp_path {state}/tmp/body;
    proxy_temp_path {state}/tmp/proxy;
    fastcgi_temp_path {state}/tmp/fastcgi;
    uwsgi_temp_path {state}/tmp/uwsgi;
    scgi_temp_path {state}/tmp/scgi;
    proxy_request_buffering off;
    proxy_buffering off;
    upstream scoring {{ server 127.0.0.1:{backend_port}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://scoring;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 120s;
            add_header X-Model-Name {name} always;
            add_header X-Model-Version {version} always;
        }}
    }}
}}
"""


@dataclass
class Backend:
    """One `mlflow models serve` process for one version."""

    version: str
    port: int
    pid: int  # the process group (the `mlflow models serve` command)
    server_pid: int  # the uvicorn process that answers

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class State:
    """What is serving: written atomically to serve.json after every switch."""

    name: str
    version: str
    url: str
    backend_port: int
    backend_pid: int
    server_pid: int
    proxy_pid: int
    started_at: str

    @property
    def backend(self) -> Backend:
        return Backend(self.version, self.backend_port, self.backend_pid, self.server_pid)


def state_file(settings: Settings) -> Path:
    return settings.serve_state / "serve.json"


def read_state(settings: Settings) -> State | None:
    """The recorded state, or None when nothing was started (or the file is unreadable)."""
    try:
        return State(**json.loads(state_file(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_state(settings: Settings, state: State) -> None:
    with atomic_path(state_file(settings)) as tmp:
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")


def alive(pid: int, needle: str) -> bool:
    """True when `pid` runs and its command line contains `needle` (a reused pid is not)."""
    import psutil

    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and needle in " ".join(p.cmdline())
    except (psutil.Error, ValueError):
        return False


def port_in_use(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_binary() -> str:
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


def _tail(log: Path) -> str:
    """The cause of a failure, as a process's log file reports it."""
    try:
        return cause(log.read_text(errors="replace"))
    except OSError:
        return "no log"


def _server_pid(pid: int) -> int:
    """The uvicorn process under `mlflow models serve` (`pid` itself if it has none)."""
    import psutil

    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            if "uvicorn" in " ".join(child.cmdline()):
                return child.pid
    return pid


def start_backend(settings: Settings, name: str, version: str, timeout: float = 180.0) -> Backend:
    """Start `models:/name/version` on a free loopback port; wait until it answers /health."""
    state = settings.serve_state
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = state / f"scoring-v{version}.log"
    bindir = str(Path(sys.executable).parent)  # `mlflow models serve` execs `uvicorn` by name
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd = [str(Path(bindir) / "mlflow"), "models", "serve", "-m", f"models:/{name}/{version}"]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}"
    while not is_healthy(url, timeout=1.0):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_pid(proc.pid)
            raise DurationError(
                f"version {version} of {name} did not start serving ({_tail(log_path)}); "
                f"see {log_path}"
            )
        time.sleep(0.2)
    return Backend(version, port, proc.pid, _server_pid(proc.pid))


def stop_backend(backend: Backend) -> None:
    """Stop a scoring process: its group holds the uvicorn process it started."""
    stop_pid(backend.pid)


def _write_conf(settings: Settings, name: str, backend: Backend) -> Path:
    state = settings.serve_state
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (state / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    conf = state / "nginx.conf"
    text = NGINX_CONF.format(
        state=state.resolve(),
        backend_port=backend.port,
        port=settings.serve_port,
        name=name,
        version=backend.version,
    )
    with atomic_path(conf) as tmp:
        tmp.write_text(text)
    return conf


def _nginx(settings: Settings, *args: str) -> list[str]:
    state = settings.serve_state.resolve()
    return [nginx_binary(), "-p", str(state), "-c", str(state / "nginx.conf"), "-e",
            str(state / "nginx-error.log"), *args]  # fmt: skip


def proxy_pid(settings: Settings) -> int | None:
    """The running proxy's master pid, or None (a stale pid file is removed)."""
    pid_file = settings.serve_state / "nginx.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if alive(pid, "nginx"):
        return pid
    stop_pid(pid, timeout=5.0)  # a master killed with -9 can leave its workers serving
    pid_file.unlink(missing_ok=True)
    return None


def check_port(settings: Settings) -> None:
    """Refuse, before anything starts, a serving port that another program holds."""
    port = settings.serve_port
    if proxy_pid(settings) is None and port_in_use(port):
        raise DurationError(
            f"port {port} is taken by another program: stop it, or serve on another port "
            "with SERVE_PORT=..."
        )


def start_proxy(settings: Settings, timeout: float = 15.0) -> int:
    """Start nginx on 127.0.0.1:SERVE_PORT in front of the configured backend."""
    port = settings.serve_port
    check_port(settings)
    log = settings.serve_state / "nginx-error.log"
    proc = subprocess.Popen(
        _nginx(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while not port_in_use(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_pid(proc.pid)
            raise DurationError(f"the proxy on port {port} did not start ({_tail(log)}); see {log}")
        time.sleep(0.1)
    return proc.pid


def _draining(pid: int) -> bool:
    """True while the proxy has old workers finishing their requests after a reload."""
    import psutil

    try:
        children = psutil.Process(pid).children()
        return any("shutting down" in " ".join(c.cmdline()) for c in children)
    except psutil.Error:
        return False


def reload_proxy(settings: Settings, pid: int, timeout: float = 130.0) -> None:
    """Check the new config, reload gracefully, and wait until the old workers are gone."""
    check = subprocess.run(_nginx(settings, "-t"), capture_output=True, text=True)
    if check.returncode != 0:
        raise DurationError(f"the proxy refused its new config: {cause(check.stderr)}")
    os.kill(pid, signal.SIGHUP)
    time.sleep(0.1)
    deadline = time.monotonic() + timeout
    while _draining(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def switch(settings: Settings, name: str, backend: Backend) -> State:
    """Point the proxy at `backend` (starting the proxy if needed); stop the old backend."""
    old = read_state(settings)
    _write_conf(settings, name, backend)
    pid = proxy_pid(settings)
    if pid is None:
        pid = start_proxy(settings)
    else:
        reload_proxy(settings, pid)
    state = State(
        name=name,
        version=backend.version,
        url=settings.serve_url,
        backend_port=backend.port,
        backend_pid=backend.pid,
        server_pid=backend.server_pid,
        proxy_pid=pid,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_state(settings, state)
    if old is not None and old.backend_pid != backend.pid:
        stop_backend(old.backend)
    return state


@contextmanager
def started(settings: Settings, name: str, version: str) -> Iterator[Backend]:
    """Start `version` beside whatever serves; if the block fails before it is the one
    serving, stop it (the old version goes on serving)."""
    check_port(settings)
    backend = start_backend(settings, name, version)
    try:
        yield backend
    except BaseException:
        serving = read_state(settings)
        if serving is None or serving.backend_pid != backend.pid:
            stop_backend(backend)
        raise


def status(settings: Settings) -> dict:
    """What serves, asked of the processes themselves; stale pid files are cleaned."""
    state = read_state(settings)
    pid = proxy_pid(settings)
    out = {"url": settings.serve_url, "model_name": None, "version": None, "pid": None,
           "proxy_pid": pid, "healthy": False, "started_at": None}  # fmt: skip
    if state is None:
        out["problem"] = "nothing is serving: run `duration serve start` or `duration deploy`"
        return out
    backend_up = alive(state.server_pid, "uvicorn") and is_healthy(state.backend.url)
    out.update(
        model_name=state.name,
        version=state.version,
        pid=state.server_pid,
        started_at=state.started_at,
        healthy=bool(pid and backend_up and is_healthy(settings.serve_url)),
    )
    if not out["healthy"]:
        what = "the proxy is down" if pid is None else f"version {state.version} is down"
        out["problem"] = f"{what}: `duration serve start` or `duration deploy` restores it"
    return out


def stop(settings: Settings) -> list[str]:
    """Stop the proxy and the serving backend; return what was stopped."""
    stopped = []
    pid = proxy_pid(settings)
    if pid is not None:
        stop_pid(pid)
        (settings.serve_state / "nginx.pid").unlink(missing_ok=True)
        stopped.append("proxy")
    state = read_state(settings)
    if state is not None:
        if alive(state.backend_pid, "mlflow") or alive(state.server_pid, "uvicorn"):
            stopped.append(f"version {state.version}")
        stop_backend(state.backend)
        state_file(settings).unlink(missing_ok=True)
    return stopped
