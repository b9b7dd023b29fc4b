"""Loopback ports and HTTP health checks."""

from __future__ import annotations

import os
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port no one listens on at 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts connections on `host`:`port` (127.0.0.1 by default)."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


CERT_ENV = "MLFLOW_TRACKING_SERVER_CERT_PATH"  # the CA a client trusts, as MLflow's reads it


def tls_context() -> ssl.SSLContext:
    """What an https client here trusts: the CA file in MLFLOW_TRACKING_SERVER_CERT_PATH,
    else the system's; host names are checked."""
    return ssl.create_default_context(cafile=os.environ.get(CERT_ENV) or None)


def is_healthy(uri: str, timeout: float = 2.0) -> bool:
    """True when `uri`/health answers OK (over https, with `tls_context`)."""
    return health_problem(uri, timeout) is None


def health_problem(uri: str, timeout: float = 2.0) -> str | None:
    """None when `uri`/health answers OK; else why not, in a few words (a TLS failure is
    named as such: `tls: ...`)."""
    if not uri.startswith(("http://", "https://")):
        return "not an http(s) address"
    context = tls_context() if uri.startswith("https://") else None
    try:
        with urllib.request.urlopen(
            f"{uri.rstrip('/')}/health",
            timeout=timeout,  # noqa: S310
            context=context,
        ) as r:
            return None if r.status == 200 else f"HTTP {r.status}"
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLError):
            return f"tls: {getattr(e.reason, 'verify_message', None) or e.reason}"
        return str(e.reason)
    except ssl.SSLError as e:
        return f"tls: {getattr(e, 'verify_message', None) or e}"
    except (OSError, ValueError) as e:
        return str(e)


def said(r: Any, limit: int = 200) -> str:
    """What an HTTP answer (a `requests` response) says, on one line: its JSON `message`
    (MLflow's error bodies), else its text."""
    try:
        message = r.json().get("message", r.text)
    except ValueError:
        message = r.text
    return " ".join(str(message).split())[:limit]
