"""The nginx proxy in front of the scoring processes, on 127.0.0.1:SERVE_PORT.

It listens on 127.0.0.1 only, passes each request to the workers with nginx's own unique
`X-Request-Id` (the prediction log's `request_id`), and answers a body over the limit with
a JSON 413. Switching versions rewrites its upstream and reloads it gracefully (SIGHUP): new
connections go to the new version while in-flight requests finish on the old one, so no
request is dropped. Its config, pid and logs live under `paths.serve_state`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from duration.errors import DurationError, cause
from duration.infra.files import tail, write_atomic
from duration.infra.net import LOOPBACK, port_in_use
from duration.infra.proc import alive, stop_group
from duration.settings import Settings

NGINX_CONF = """# Written by duration.infra.proxy: do not edit (rewritten on every deploy).
{head}http {{
    access_log off;  # the prediction log records every served ride
    # A request's body is read whole, in memory, before it goes on: a worker that dies
    # mid-request can then be retried on another. Over the limit is a JSON 413.
    client_max_body_size {max_body};
    client_body_buffer_size {max_body};
{temp_paths}    proxy_buffering off;
    # The workers share one port; listed twice, a request that lost its worker (killed,
    # restarting) is retried once on a fresh connection, and no peer is ever marked down.
    upstream production {{
        server {loopback}:{production_port} max_fails=0;
        server {loopback}:{production_port} max_fails=0;
        keepalive 64;
    }}
{candidate}    server {{
        listen {loopback}:{port};
        error_page 413 @too_large;
        error_page 502 503 504 @unavailable;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header X-Request-Id $request_id;
        proxy_set_header X-Duration-Smoke "";  # only a deploy's own smoke test skips the log
        proxy_next_upstream error timeout non_idempotent;
        proxy_next_upstream_tries 2;
        proxy_read_timeout 120s;
        location / {{
            proxy_pass http://production;
        }}
        location = /invocations {{
{invocations}        }}
        location @too_large {{
            default_type application/json;
            return 413 '{too_large}';
        }}
        location @unavailable {{
            default_type application/json;
            return 503 '{unavailable}';
        }}
{shadow}    }}
}}
"""
# A canary: a share of the clients, by a key that is the same for every request of one
# client (X-Client-Id, else the ride's X-Ride-Id, else the request's own id). If the
# canary does not answer, Production does (its backup server).
CANARY = """    upstream canary {{
        server {loopback}:{port} max_fails=0;
        server {loopback}:{production_port} backup;
        keepalive 32;
    }}
    map $http_x_ride_id $ride_key {{ "" $request_id; default $http_x_ride_id; }}
    map $http_x_client_id $client_key {{ "" $ride_key; default $http_x_client_id; }}
    split_clients "${{client_key}}" $arm {{ {weight}% canary; * production; }}
"""
# A shadow: nginx mirrors each request to it and throws its answer away. The shadow's front
# acknowledges at once and scores after; short timeouts bound what a stalled shadow can
# cost the client's connection, and a dead one is refused at once.
SHADOW_UPSTREAM = """    upstream shadow {{
        server {loopback}:{port} max_fails=0;
        keepalive 32;
    }}
"""
SHADOW_LOCATION = """        location = /_shadow {{
            internal;
            proxy_pass http://shadow/invocations;
            proxy_next_upstream off;
            proxy_connect_timeout {timeout_ms}ms;
            proxy_send_timeout {timeout_ms}ms;
            proxy_read_timeout {timeout_ms}ms;
        }}
"""
SHADOW_TIMEOUT_MS = 50
MAX_BODY = "8m"  # 5,000 raw TLC records are about 2 MB of JSON


# What every nginx of the project starts with: one worker, its pid, log and temp files
# under its own folder (the `{head}` and `{temp_paths}` of a config).
NGINX_HEAD = """daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
events {{ worker_connections 1024; }}
"""
TEMPS = ("body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_folder(folder: Path) -> dict[str, str]:
    """Make `folder`'s temp folders; the `head` and `temp_paths` of a config there."""
    folder = folder.resolve()
    for sub in TEMPS:
        (folder / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    names = {"body": "client_body"}
    temp_paths = "".join(f"    {names.get(t, t)}_temp_path {folder}/tmp/{t};\n" for t in TEMPS)
    return {"head": NGINX_HEAD.format(folder=folder), "temp_paths": temp_paths}


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


def _json_error(code: str, message: str) -> str:
    """An error body as MLflow's scoring server writes one, quoted for nginx's `return`."""
    return json.dumps({"error_code": code, "message": message}).replace("'", "\\'")


@dataclass(frozen=True, kw_only=True)
class Route:
    """Where the proxy sends requests: Production's port, and a candidate arm's, if any."""

    name: str
    production_port: int
    candidate: str | None = None  # canary or shadow
    candidate_port: int | None = None
    weight: int = 0  # the canary's share of clients, %


def _arms(route: Route) -> tuple[str, str, str]:
    """The candidate's upstream (and split), the /invocations location, and the shadow's."""
    pass_to = "            proxy_pass http://{};\n"
    if route.candidate == "canary":
        up = CANARY.format(loopback=LOOPBACK, port=route.candidate_port,
                           production_port=route.production_port, weight=route.weight)  # fmt: skip
        return up, pass_to.format("$arm"), ""
    if route.candidate == "shadow":
        up = SHADOW_UPSTREAM.format(loopback=LOOPBACK, port=route.candidate_port)
        mirror = "            mirror /_shadow;\n            mirror_request_body on;\n"
        return (
            up,
            mirror + pass_to.format("production"),
            SHADOW_LOCATION.format(timeout_ms=SHADOW_TIMEOUT_MS),
        )
    return "", pass_to.format("production"), ""


def write_conf(settings: Settings, route: Route) -> Path:
    """The proxy's config: every request to Production's workers, or split with a canary,
    or mirrored to a shadow."""
    state = settings.paths.serve_state
    candidate, invocations, shadow = _arms(route)
    text = NGINX_CONF.format(
        **nginx_folder(state), loopback=LOOPBACK, production_port=route.production_port,
        port=settings.serve.port, max_body=MAX_BODY, candidate=candidate,
        invocations=invocations, shadow=shadow,
        too_large=_json_error(
            "REQUEST_TOO_LARGE",
            f"the body is over {MAX_BODY}: send fewer rides a request "
            f"(at most {settings.serve.max_rides})",
        ),
        unavailable=_json_error(
            "UNAVAILABLE", "no scoring worker answered: see `duration serve status`"
        ),
    )  # fmt: skip
    return write_atomic(state / "nginx.conf", text)


def nginx_command(folder: Path, *args: str) -> list[str]:
    """An nginx command line for the config, pid and logs under `folder`."""
    folder = folder.resolve()
    return [nginx_binary(), "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e",
            str(folder / "nginx-error.log"), *args]  # fmt: skip


def nginx_pid(folder: Path) -> int | None:
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


def start_nginx(folder: Path, port: int, host: str = LOOPBACK, timeout: float = 15.0) -> int:
    """Start the nginx under `folder` (its config written already); wait for `port`."""
    log = folder / "nginx-error.log"
    proc = subprocess.Popen(
        nginx_command(folder), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while not port_in_use(port, host):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_group(proc.pid)
            raise DurationError(f"the proxy on port {port} did not start ({tail(log)}); see {log}")
        time.sleep(0.1)
    return proc.pid


def stop_nginx(folder: Path) -> bool:
    """Stop the nginx under `folder`; False if it was not running."""
    master = nginx_pid(folder)
    if master is None:
        return False
    stop_group(master)
    (folder / "nginx.pid").unlink(missing_ok=True)
    return True


def command(settings: Settings, *args: str) -> list[str]:
    """An nginx command line for the proxy's own config and folder."""
    return nginx_command(settings.paths.serve_state, *args)


def pid(settings: Settings) -> int | None:
    """The running proxy's master pid, or None."""
    return nginx_pid(settings.paths.serve_state)


def check_free(folder: Path, port: int, host: str, instead: str) -> None:
    """Refuse, before anything starts, a port that a program other than the nginx under
    `folder` holds; `instead` says how to pick another."""
    if nginx_pid(folder) is None and port_in_use(port, host):
        on = "" if host == LOOPBACK else f" on {host}"
        raise DurationError(f"port {port}{on} is taken by another program: stop it, or {instead}")


def check_port(settings: Settings) -> None:
    """Refuse, before anything starts, a serving port that another program holds."""
    check_free(settings.paths.serve_state, settings.serve.port, LOOPBACK,
               "serve on another port with SERVE_PORT=...")  # fmt: skip


def start(settings: Settings, timeout: float = 15.0) -> int:
    """Start nginx on 127.0.0.1:SERVE_PORT with the config written last."""
    check_port(settings)
    return start_nginx(settings.paths.serve_state, settings.serve.port, timeout=timeout)


def _draining(master: int) -> bool:
    """True while the proxy has old workers finishing their requests after a reload."""
    try:
        children = psutil.Process(master).children()
        return any("shutting down" in " ".join(c.cmdline()) for c in children)
    except psutil.Error:
        return False


def reload(settings: Settings, master: int, timeout: float = 130.0) -> None:
    """Check the new config, reload gracefully, and wait until the old workers are gone."""
    check = subprocess.run(command(settings, "-t"), capture_output=True, text=True)
    if check.returncode != 0:
        raise DurationError(f"the proxy refused its new config: {cause(check.stderr)}")
    os.kill(master, signal.SIGHUP)
    time.sleep(0.1)
    deadline = time.monotonic() + timeout
    while _draining(master) and time.monotonic() < deadline:
        time.sleep(0.05)


def stop(settings: Settings) -> bool:
    """Stop the proxy; False if it was not running."""
    return stop_nginx(settings.paths.serve_state)
