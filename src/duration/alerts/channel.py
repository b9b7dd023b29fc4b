"""The alert channel: one JSON message per event, in one format whoever sends it.

The message is Slack-compatible (`{"text": ...}`) plus structured fields: `event`, `id`
(one per event: a receiver can drop a repeat), `at`, and the event's own (month, model,
version...). It is appended to the home's alert log (`.mlflow/alerts.jsonl`) and, when
DURATION_ALERT_URL is set, posted there, retried a few times with a bounded wait. A failed
delivery never fails the work: it is written to the log, and that is all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from duration.settings import Settings

ATTEMPTS = 3
TIMEOUT_S = 5.0
Value = str | int | float | bool | None


class Event(StrEnum):
    """What happened."""

    drifted = "drifted"  # a month's inputs or predictions drifted
    degraded = "degraded"  # a month's RMSE passed the threshold
    retrained = "retrained"  # a challenger was trained and gated
    live_arm = "live_arm"  # a canary or a shadow started serving
    ab_decision = "ab_decision"  # a live arm was promoted, aborted, or goes on
    run_failed = "run_failed"  # an orchestrator's run failed
    rollback = "rollback"  # a deploy failed and what served goes on serving
    republished = "republished"  # the TLC published a month again, with other data
    approval = "approval"  # a decision waits for a person (`duration automate approve`)
    firing = "firing"  # a Prometheus alert rule fired
    resolved = "resolved"  # ... and resolved


@dataclass(frozen=True, kw_only=True)
class Alert:
    """One event, as the channel sends it. An alert with a `key` (what makes the event
    itself: its kind, model, month...) is sent once: a retried run that meets the same
    event again finds it delivered in the log, and sends nothing."""

    event: Event
    text: str  # one line a person reads
    fields: dict[str, Value] = field(default_factory=dict)
    key: str | None = None
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def id(self) -> str:
        """One per event: from its key, else unique."""
        if self.key is None:
            return self.nonce
        return hashlib.sha256(f"{self.event}|{self.key}".encode()).hexdigest()[:32]

    def message(self) -> dict[str, Value]:
        return {
            "text": self.text,
            "event": self.event.value,
            "id": self.id,
            "at": self.at,
            **self.fields,
        }


def _post(url: str, message: dict[str, Value]) -> str | None:
    """Post with a few bounded retries; None when delivered, else why not."""
    import requests  # deferred: only an alert that is posted needs it
    from tenacity import (  # deferred, as requests
        RetryError,
        retry,
        retry_if_exception_type,
        stop_after_attempt,
        wait_exponential,
    )

    class Retry(Exception):
        pass

    @retry(
        stop=stop_after_attempt(ATTEMPTS),
        wait=wait_exponential(multiplier=0.5, max=2),
        retry=retry_if_exception_type((Retry, requests.ConnectionError, requests.Timeout)),
    )
    def once() -> None:
        r = requests.post(url, json=message, timeout=TIMEOUT_S)
        if r.status_code >= 500 or r.status_code == 429:
            raise Retry(f"HTTP {r.status_code}")
        if r.status_code >= 400:
            raise requests.HTTPError(f"HTTP {r.status_code}")

    try:
        once()
    except RetryError as e:
        return f"gave up after {ATTEMPTS} tries: {e.last_attempt.exception()}"
    except requests.RequestException as e:
        return " ".join(str(e).split())[:200]
    return None


def read(settings: Settings) -> list[dict[str, Value]]:
    """Every alert in the log, oldest first."""
    try:
        lines = settings.paths.alerts_log.read_text().splitlines()
    except OSError:
        return []
    out: list[dict[str, Value]] = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def delivered(settings: Settings) -> set[str]:
    """The ids of the alerts the log holds as delivered (or kept, with nowhere to post)."""
    return {str(m.get("id")) for m in read(settings) if m.get("problem") is None}


def send(settings: Settings, alert: Alert) -> bool:
    """Keep `alert` in the alert log and post it where DURATION_ALERT_URL says; True when
    it was delivered (or there is nowhere to post it). Never raises."""
    message = alert.message()
    if alert.key is not None and alert.id in delivered(settings):
        return True  # sent before: by a run that was retried, or a command run again
    url = settings.automate.alert_url
    problem = _post(url, message) if url else None
    line = json.dumps(
        {**message, "delivered": url is not None and problem is None, "problem": problem}
    )
    with contextlib.suppress(OSError):
        path = settings.paths.alerts_log
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    if problem:
        print(
            f"duration: alert not delivered ({problem}); kept in {settings.paths.alerts_log}",
            file=sys.stderr,
        )
    return problem is None
