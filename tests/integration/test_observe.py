"""Serving metrics with a real Prometheus, Alertmanager and the relay (`duration observe`),
real nginx and real scoring workers on loopback: a replay is counted ride for ride, as the
prediction log holds it; clients never see /metrics; a canary's group killed is one arm-down
alert at the receiver (its resolution: `tests/unit/observe/test_relay.py`, and
`make observe-demo`)."""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests

from benchmarks.support.alert_sink import alert_sink
from duration.errors import DurationError
from duration.infra.net import free_port
from duration.observe import life as observe
from duration.ops import deploy, traffic
from duration.ops.specs import TrafficRequest
from duration.serving import log_read, service
from duration.serving.state import read_state
from tests.helpers import invoke, until
from tests.integration.serving import env

pytestmark = pytest.mark.xdist_group("observe")
MONTH = "2021-03"
RIDES = 600


def value(s, promql: str) -> float | None:
    got = observe.query(s, promql)
    return float(got[0]["value"][1]) if got else None


def test_a_replay_is_counted_ride_for_ride_and_a_killed_canary_is_one_alert(home, name):
    with alert_sink() as sink:
        s = home.but(
            serve={"workers": 2},
            automate={"alert_url": sink.url},
            observe={
                "prometheus_port": free_port(),
                "alertmanager_port": free_port(),
                "relay_port": free_port(),
                "scrape_s": 1,
            },
        )
        deploy.start(s, name)
        proc = invoke("deploy", "--name", name, "--canary", "2", "--weight", "30", env=env(s))
        assert proc.returncode == 0, proc.stderr
        observe.start(s)
        try:
            with pytest.raises(DurationError, match="runs for this home already"):
                observe.start(s)
            # clients of the serving port never see the metrics
            assert requests.get(f"{s.serve.url}/metrics", timeout=10).status_code == 404

            since = time.time()
            result = traffic.replay(s, TrafficRequest(month=MONTH, rides=RIDES, rate=200))
            assert result.failed_requests == 0
            assert service.wait_for_log(s, since, 60)
            rows = len(log_read.read(s.paths.serve_log).table)
            counted = 'sum(duration_serving_rides_total{arm=~"production|canary"})'
            assert until(lambda: value(s, counted) == RIDES, 60), value(s, counted)
            assert rows == RIDES
            written = 'sum(duration_prediction_log_rows_total{outcome="written"})'
            assert until(lambda: value(s, written) == RIDES, 30), value(s, written)
            by_arm = observe.query(s, "sum by (arm) (duration_serving_rides_total)")
            assert {r["metric"]["arm"]: float(r["value"][1]) for r in by_arm} == {
                arm: float(n) for arm, n in result.arms.items()
            }

            # the canary's whole group killed: one ArmDown at the receiver, then resolved
            canary = read_state(s).candidate
            os.killpg(canary.pid, signal.SIGKILL)
            assert sink.wait_for(lambda m: any(x.get("alertname") == "ArmDown" for x in m), 120), (
                sink.messages
            )
            (down,) = [m for m in sink.messages if m.get("alertname") == "ArmDown"]
            assert down["event"] == "firing" and down["arm"] == "canary"
            assert "duration serve status" in down["runbook"]
            time.sleep(3)  # no second message for the same incident
            assert [m.get("alertname") for m in sink.messages].count("ArmDown") == 1
        finally:
            stopped = observe.stop(s)
        assert set(stopped) == {"prometheus", "alertmanager", "relay"}
        assert all(pid is None for pid in observe.status(s).running.values())
