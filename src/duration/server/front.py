"""The team server's TLS front: nginx on TEAM_HOST:TEAM_PORT (127.0.0.1:5443 by default)
with a certificate of the project's CA (`duration.server.tls`); plain HTTP there is
redirected to https. MLflow stays on 127.0.0.1:MLFLOW_PORT behind it. Only this front may
bind beyond loopback: it has users and TLS.
"""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path

from duration.errors import DurationError
from duration.infra import nginx
from duration.infra.files import write_atomic
from duration.infra.net import LOOPBACK
from duration.server import tls
from duration.settings import Settings

# Its TLS: TLS 1.2 and 1.3 only, nginx's default ciphers (HIGH:!aNULL:!MD5), a session cache,
# HSTS for a year. It holds the front's key (the throttle trusts its X-Forwarded-For only
# with it): written 0600.
CONF = """# Written by duration.server.front: do not edit (rewritten on every start).
{head}http {{
    access_log off;
    client_max_body_size 0;  # artifacts: models, plots, datasets
{temp_paths}    proxy_request_buffering off;
    proxy_buffering off;
    upstream mlflow {{
        server {loopback}:{mlflow_port};
        keepalive 16;
    }}
    server {{
        listen {host}:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:team:1m;
        error_page 497 =301 https://$host:$server_port$request_uri;  # plain HTTP: go https
        add_header Strict-Transport-Security "max-age=31536000" always;
        location / {{
            proxy_pass http://mlflow;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {loopback}:{mlflow_port};  # MLflow takes only its own
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-For $remote_addr;  # the client's, never its own
            proxy_set_header X-Duration-Front {front_key};
            proxy_read_timeout 300s;
        }}
        # the orchestrator's UI (no login of its own): an admin's credentials only
        location /dagster/ {{
            auth_request /_duration_admin;
            error_page 401 = @login;
            proxy_pass http://{loopback}:{automate_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;  # its live updates: a websocket
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host {loopback}:{automate_port};
            proxy_set_header Authorization "";  # the team's password stays here
            proxy_read_timeout 300s;
        }}
        location @login {{  # a browser asks for the team's user and password
            add_header WWW-Authenticate 'Basic realm="mlflow"' always;
            return 401;
        }}
        location = /_duration_admin {{
            internal;
            proxy_pass http://mlflow{admin_check};
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host {loopback}:{mlflow_port};
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Duration-Front {front_key};
        }}
    }}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ""      "";
    }}
}}
"""
ADMIN_CHECK = "/duration/admin-check"  # the team app answers it to admins only
DAGSTER_PREFIX = "/dagster"  # the orchestrator's UI behind the front


def key(settings: Settings) -> str:
    """The front's key, made once (0600): what tells the server a request came through it."""
    path = settings.paths.team_state / "front.key"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, secrets.token_urlsafe(24) + "\n", mode=0o600)
    return path.read_text().strip()


def folder(settings: Settings) -> Path:
    """The front's nginx folder: its config, pid and logs."""
    return settings.paths.team_state / "front"


def team_url(settings: Settings) -> str:
    """Where clients reach the front: by its host name, if it has one, else its address."""
    t = settings.tracking
    return f"https://{t.team_name or t.team_host}:{t.team_port}"


def check_host(settings: Settings) -> None:
    """DURATION_TEAM_HOST (`--host`) must be an IP address. Only this front may bind beyond
    loopback: it has users and TLS (a plain server's `--host` is refused by the CLI)."""
    host = settings.tracking.team_host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise DurationError(
            f"DURATION_TEAM_HOST={host!r} is not an IP address: give the address to bind, "
            "such as 127.0.0.1 or this host's LAN address"
        ) from None


def write_front(settings: Settings, certs: tls.Tls, front_key: str) -> Path:
    """The TLS front's nginx config."""
    where = folder(settings).resolve()
    text = CONF.format(
        **nginx.folder_parts(where),
        loopback=LOOPBACK,
        mlflow_port=settings.tracking.port,
        host=settings.tracking.team_host,
        port=settings.tracking.team_port,
        cert=certs.cert.resolve(),
        key=certs.key.resolve(),
        front_key=front_key,
        automate_port=settings.automate.port,
        admin_check=ADMIN_CHECK,
    )
    return write_atomic(where / "nginx.conf", text, mode=0o600)


def check_port(settings: Settings) -> None:
    """Refuse, before anything starts, a TLS port that another program holds."""
    nginx.check_free(
        folder(settings),
        settings.tracking.team_port,
        settings.tracking.team_host,
        "give the TLS front another port with DURATION_TEAM_PORT=...",
    )


def start(settings: Settings) -> str:
    """The TLS front: a certificate for its names, then nginx; returns its URL."""
    host, port = settings.tracking.team_host, settings.tracking.team_port
    check_port(settings)
    named = [settings.tracking.team_name] if settings.tracking.team_name else []
    names = list(dict.fromkeys([*named, host, LOOPBACK, "localhost"]))
    write_front(settings, tls.ensure(settings.paths.tls, names), key(settings))
    nginx.stop(folder(settings))  # a front left running: started again on the new config
    nginx.start(folder(settings), port, host)
    return team_url(settings)


def stop(settings: Settings) -> bool:
    """Stop the TLS front; False if it was not running."""
    return nginx.stop(folder(settings))
