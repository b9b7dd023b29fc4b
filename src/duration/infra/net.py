"""Loopback ports and HTTP health checks."""

from __future__ import annotations

import socket
import urllib.request

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port no one listens on at 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((LOOPBACK, port)) == 0


def is_healthy(uri: str, timeout: float = 2.0) -> bool:
    """True when `uri`/health answers OK."""
    if not uri.startswith(("http://", "https://")):
        return False
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as r:  # noqa: S310
            return bool(r.status == 200)
    except (OSError, ValueError):
        return False
