"""The alert channel: kept in the log always, posted with bounded retries, never raising,
and an event with a key sent once."""

from __future__ import annotations

import json

from benchmarks.support.alert_sink import alert_sink
from duration.alerts.channel import Alert, Event, delivered, read, send
from duration.infra.net import free_port
from duration.settings import Automate, Paths, Settings


def settings(tmp_path, url=None) -> Settings:
    return Settings(paths=Paths(home=tmp_path), automate=Automate(alert_url=url))


def test_without_a_url_alerts_are_kept_in_the_log(tmp_path):
    s = settings(tmp_path)
    assert send(s, Alert(event=Event.drifted, text="m v1 is drift on 2023-04", key="m|2023-04"))
    (kept,) = read(s)
    assert kept["event"] == "drifted" and kept["text"].startswith("m v1") and not kept["delivered"]
    assert kept["id"] in delivered(s)


def test_a_posted_alert_is_slack_compatible_and_a_keyed_one_goes_once(tmp_path):
    with alert_sink() as sink:
        s = settings(tmp_path, sink.url)
        a = Alert(event=Event.retrained, text="retrained v2", fields={"month": "2023-05"}, key="k")
        assert send(s, a) and send(s, Alert(event=Event.retrained, text="again", key="k"))
        assert send(s, Alert(event=Event.rollback, text="no key: each is its own"))
        assert send(s, Alert(event=Event.rollback, text="no key: each is its own"))
        assert sink.wait_for(lambda m: len(m) == 3, timeout=10)
    first = sink.messages[0]
    assert first["text"] == "retrained v2" and first["event"] == "retrained"
    assert first["month"] == "2023-05" and first["id"] == a.id
    assert [m["event"] for m in sink.messages] == ["retrained", "rollback", "rollback"]
    assert all(
        json.loads(line)["delivered"] for line in s.paths.alerts_log.read_text().splitlines()
    )


def test_a_failed_delivery_never_fails_the_work(tmp_path, capsys):
    dead = f"http://127.0.0.1:{free_port()}/alerts"  # nobody listens
    s = settings(tmp_path, dead)
    assert not send(s, Alert(event=Event.run_failed, text="run 1 failed", key="r1"))
    (kept,) = read(s)
    assert not kept["delivered"] and "3 tries" in kept["problem"]
    assert "alert not delivered" in capsys.readouterr().err
    assert kept["id"] not in delivered(s)  # a later retry may still deliver it
