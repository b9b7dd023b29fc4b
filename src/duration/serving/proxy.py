"""The nginx proxy in front of the scoring workers, on 127.0.0.1:SERVE_PORT.

It listens on 127.0.0.1 only, passes each request to the workers with nginx's own unique
`X-Request-Id` (the prediction log's `request_id`), and answers a body over the limit with
a JSON 413. Beside Production it splits clients with a canary, or mirrors every request to
a shadow. Switching versions rewrites its config and reloads it gracefully (SIGHUP): new
connections go to the new version while in-flight requests finish on the old one, so no
request is dropped. Its config, pid and logs live under `paths.serve_state`; starting and
stopping it is `duration.infra.nginx`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from duration.infra import nginx
from duration.infra.files import write_atomic
from duration.infra.net import LOOPBACK
from duration.serving.state import Role, State
from duration.settings import Settings

CONF = """# Written by duration.serving.proxy: do not edit (rewritten on every deploy).
{head}http {{
    access_log off;  # the prediction log records every served ride
    # A request's body is read whole, in memory, before it goes on: a worker that dies
    # mid-request can then be retried on another. Over the limit is a JSON 413.
    client_max_body_size {max_body};
    client_body_buffer_size {max_body};
{temp_paths}    proxy_buffering off;
    # The workers share one port. Listed three times, a request that lost its worker (killed,
    # restarting) is retried, up to twice, on a fresh connection to another, and no peer is
    # ever marked down. A worker writes each answer in one write (serving.one_write), so a
    # dead one never leaves half an answer to pass on: what nginx got is whole, or nothing.
    upstream production {{
        server {loopback}:{production_port} max_fails=0;
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
        proxy_next_upstream_tries 3;
        proxy_next_upstream_timeout 15s;  # retries end here; the answer's own bound: 120 s
        proxy_read_timeout 120s;
        location / {{
            proxy_pass http://production;
        }}
        location = /metrics {{  # Prometheus scrapes each group on loopback, never through here
            return 404;
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
PASS = "            proxy_pass http://{};\n"
MIRROR = "            mirror /_shadow;\n            mirror_request_body on;\n"


def _json_error(code: str, message: str) -> str:
    """An error body as MLflow's scoring server writes one, quoted for nginx's `return`."""
    return json.dumps({"error_code": code, "message": message}).replace("'", "\\'")


@dataclass(frozen=True, kw_only=True)
class Route:
    """Where the proxy sends requests: Production's port, and a candidate arm's, if any."""

    production_port: int
    candidate: Role | None = None  # canary or shadow
    candidate_port: int | None = None
    weight: int = 0  # the canary's share of clients, %


def route(state: State) -> Route:
    """The proxy's route for what `state` says serves."""
    c = state.candidate
    if c is None:
        return Route(production_port=state.backend_port)
    return Route(
        production_port=state.backend_port,
        candidate=c.role,
        candidate_port=c.port,
        weight=c.weight,
    )


def _arms(r: Route) -> tuple[str, str, str]:
    """The candidate's upstream (and split), the /invocations location, and the shadow's."""
    if r.candidate is Role.canary:
        up = CANARY.format(
            loopback=LOOPBACK,
            port=r.candidate_port,
            production_port=r.production_port,
            weight=r.weight,
        )
        return up, PASS.format("$arm"), ""
    if r.candidate is Role.shadow:
        up = SHADOW_UPSTREAM.format(loopback=LOOPBACK, port=r.candidate_port)
        shadow = SHADOW_LOCATION.format(timeout_ms=SHADOW_TIMEOUT_MS)
        return up, MIRROR + PASS.format("production"), shadow
    return "", PASS.format("production"), ""


def write_conf(settings: Settings, r: Route) -> Path:
    """The proxy's config: every request to Production's workers, or split with a canary,
    or mirrored to a shadow."""
    state = settings.paths.serve_state
    candidate, invocations, shadow = _arms(r)
    too_large = (
        f"the body is over {MAX_BODY}: send fewer rides a request "
        f"(at most {settings.serve.max_rides})"
    )
    unavailable = "no scoring worker answered: see `duration serve status`"
    text = CONF.format(
        **nginx.folder_parts(state),
        loopback=LOOPBACK,
        production_port=r.production_port,
        port=settings.serve.port,
        max_body=MAX_BODY,
        candidate=candidate,
        invocations=invocations,
        shadow=shadow,
        too_large=_json_error("REQUEST_TOO_LARGE", too_large),
        unavailable=_json_error("UNAVAILABLE", unavailable),
    )
    return write_atomic(state / "nginx.conf", text)


def pid(settings: Settings) -> int | None:
    """The running proxy's master pid, or None."""
    return nginx.master_pid(settings.paths.serve_state)


def check_port(settings: Settings) -> None:
    """Refuse, before anything starts, a serving port that another program holds."""
    nginx.check_free(
        settings.paths.serve_state,
        settings.serve.port,
        LOOPBACK,
        "serve on another port with SERVE_PORT=...",
    )


def apply(settings: Settings, r: Route) -> int:
    """Write the proxy's config for `r` and start it, or reload it (draining the old
    workers' requests); the proxy's pid."""
    write_conf(settings, r)
    master = pid(settings)
    if master is None:
        check_port(settings)
        return nginx.start(settings.paths.serve_state, settings.serve.port)
    nginx.reload(settings.paths.serve_state, master)
    return master


def stop(settings: Settings) -> bool:
    """Stop the proxy; False if it was not running."""
    return nginx.stop(settings.paths.serve_state)
