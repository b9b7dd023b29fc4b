"""Alertmanager's webhook message, turned into the alert channel's own."""

from __future__ import annotations

import json

import pytest

from duration.alerts.channel import Event
from duration.errors import DurationError
from duration.observe.relay import alerts_of


def message(status: str) -> bytes:
    alert = {
        "status": status,
        "labels": {"alertname": "ArmDown", "arm": "canary", "severity": "critical"},
        "annotations": {"summary": "the canary arm (version 2) does not answer", "runbook": "rb"},
        "startsAt": "2026-12-04T13:00:00Z",
        "fingerprint": "abc123",
    }
    return json.dumps({"version": "4", "status": status, "alerts": [alert]}).encode()


def test_firing_and_resolved_are_two_messages_and_a_repeat_is_the_same_one():
    (fired,) = alerts_of(message("firing"))
    (again,) = alerts_of(message("firing"))
    (resolved,) = alerts_of(message("resolved"))
    assert fired.event is Event.firing and resolved.event is Event.resolved
    assert fired.id == again.id != resolved.id  # the channel delivers an id once
    assert fired.text == "ArmDown: the canary arm (version 2) does not answer. Runbook: rb"
    assert resolved.text.startswith("resolved: ArmDown")
    assert fired.fields["arm"] == "canary" and fired.fields["runbook"] == "rb"


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"alerts": 3}'])
def test_what_is_not_alertmanagers_is_one_line(body):
    with pytest.raises(DurationError, match="not an Alertmanager webhook message") as e:
        alerts_of(body)
    assert "\n" not in str(e.value)
