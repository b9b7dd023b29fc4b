"""A local alert receiver for the tests and the demo: an HTTP server on a free loopback port
that keeps every JSON message posted to it (as DURATION_ALERT_URL would point Slack)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from duration.infra.net import LOOPBACK


@dataclass
class Sink:
    """What the receiver got, in order."""

    url: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self) -> list[str]:
        with self.lock:
            return [str(m.get("event")) for m in self.messages]

    def wait_for(self, ok: Callable[[list[dict[str, Any]]], bool], timeout: float) -> bool:
        """True once `ok(messages)` holds, within `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if ok(list(self.messages)):
                    return True
            time.sleep(0.2)
        return False


@contextmanager
def alert_sink() -> Iterator[Sink]:
    """A receiver on 127.0.0.1 (a free port), stopped when the block ends."""
    sink: Sink | None = None

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            assert sink is not None
            with sink.lock:
                sink.messages.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    sink = Sink(url=f"http://{LOOPBACK}:{server.server_address[1]}/alerts")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
