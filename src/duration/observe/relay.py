"""The relay between Alertmanager and the alert channel: Alertmanager posts its own JSON
(one message per group of alerts), the relay turns each alert into one `Alert` of the
channel (`duration.alerts`), firing or resolved, and sends it on.

One incident is one message and its resolution one more: Alertmanager groups by alert
name and arm, repeats a firing group only after a day (`repeat_interval`), and the key of
each message (fingerprint, status, start) makes a repeat that does arrive a no-op in the
channel, which delivers each key once.

`python -m duration.observe.relay` runs it on 127.0.0.1 (`DURATION_ALERT_RELAY_PORT`).
"""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from duration.alerts.channel import Alert, Event, Value, send
from duration.errors import DurationError
from duration.infra.net import LOOPBACK
from duration.settings import Settings

PATH = "/alerts"
MAX_BODY = 1_000_000


@dataclass(frozen=True, kw_only=True)
class Fired:
    """One alert of Alertmanager's webhook payload."""

    status: str  # firing or resolved
    name: str
    labels: dict[str, str]
    summary: str
    runbook: str
    fingerprint: str
    starts_at: str

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Fired:
        labels = {str(k): str(v) for k, v in (raw.get("labels") or {}).items()}
        notes = raw.get("annotations") or {}
        return cls(
            status=str(raw.get("status", "firing")),
            name=labels.get("alertname", "unnamed"),
            labels=labels,
            summary=str(notes.get("summary", "")),
            runbook=str(notes.get("runbook", "")),
            fingerprint=str(raw.get("fingerprint", "")),
            starts_at=str(raw.get("startsAt", "")),
        )

    def alert(self) -> Alert:
        """This alert in the channel's one format."""
        resolved = self.status == "resolved"
        said = f"{self.name}: {self.summary}" if self.summary else self.name
        text = f"resolved: {said}" if resolved else f"{said}. Runbook: {self.runbook}"
        fields: dict[str, Value] = {
            "alertname": self.name,
            "status": self.status,
            "arm": self.labels.get("arm", ""),
            "severity": self.labels.get("severity", ""),
            "runbook": self.runbook,
            "starts_at": self.starts_at,
        }
        return Alert(
            event=Event.resolved if resolved else Event.firing,
            text=text,
            fields=fields,
            key=f"prometheus-{self.fingerprint}-{self.status}-{self.starts_at}",
        )


def alerts_of(payload: bytes) -> list[Alert]:
    """The channel's alerts for one Alertmanager message (a one-line error if it is not one)."""
    try:
        raw = json.loads(payload)
        items = raw["alerts"]
    except (ValueError, KeyError, TypeError) as e:
        raise DurationError(f"not an Alertmanager webhook message: {e}") from e
    if not isinstance(items, list):
        raise DurationError("not an Alertmanager webhook message: `alerts` is not a list")
    return [Fired.of(a).alert() for a in items if isinstance(a, dict)]


class _Handler(BaseHTTPRequestHandler):
    settings: Settings

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("content-length") or 0)
        if self.path != PATH or length > MAX_BODY:
            return self._reply(HTTPStatus.NOT_FOUND if self.path != PATH else 413, b"")
        try:
            alerts = alerts_of(self.rfile.read(length))
        except DurationError as e:
            print(f"duration: alert relay: refused: {e}", file=sys.stderr, flush=True)
            return self._reply(HTTPStatus.BAD_REQUEST, str(e).encode())
        for alert in alerts:
            send(self.settings, alert)  # never raises: a failed delivery is logged
        self._reply(HTTPStatus.OK, b"{}")

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._reply(HTTPStatus.OK if self.path == "/health" else HTTPStatus.NOT_FOUND, b"{}")

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return  # the alert log is the record


def serve(settings: Settings) -> None:
    """Relay until SIGTERM."""
    handler = type("Handler", (_Handler,), {"settings": settings})
    server = ThreadingHTTPServer((LOOPBACK, settings.observe.relay_port), handler)
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
    with server:
        server.serve_forever()


if __name__ == "__main__":
    serve(Settings.from_env())
