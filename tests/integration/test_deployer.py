"""Serving follows the registry's aliases through the deployer (a real process started by
`duration serve start`), real MLflow webhooks, real nginx and scoring workers: a promote
made elsewhere is served through the webhook; a move the webhook missed is served by the
reconcile loop; a failed deploy rolls back and alerts; forged, stale and foreign webhooks are
refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.tracking import MlflowClient

from benchmarks.support.alert_sink import alert_sink
from duration.deployer import hook, life
from duration.infra.net import port_in_use
from duration.registry import aliases, uris
from duration.serving import service
from duration.serving.state import Role, read_state
from duration.settings import Automate, Settings
from duration.tracking.names import DEPLOY_EXPERIMENT
from tests.helpers import invoke, until
from tests.integration.serving import env
from tests.integration.test_serve import _broken_version

pytestmark = pytest.mark.xdist_group("deployer")


def served_version(s: Settings) -> str | None:
    st = read_state(s)
    return None if st is None else st.version


def deploy_runs(name: str):
    return mlflow.search_runs(
        experiment_names=[DEPLOY_EXPERIMENT],
        filter_string=f"tags.model_name = '{name}'",
        order_by=["attributes.start_time DESC"],
    )


def deployer_log(s: Settings) -> str:
    return (s.paths.deployer_state / "deployer.log").read_text()


def post_hook(s: Settings, body: bytes, headers: dict) -> requests.Response:
    return requests.post(s.automate.hook_url, data=body, headers=headers, timeout=10)


def signed(secret: str, body: bytes, stamp: int, delivery: str = "d-1") -> dict:
    return {
        hook.DELIVERY: delivery,
        hook.TIMESTAMP: str(stamp),
        hook.SIGNATURE: hook.signature(secret, delivery, str(stamp), body),
        "Content-Type": "application/json",
    }


def test_a_promote_made_elsewhere_is_served_through_the_webhook(home, name):
    started = invoke("serve", "start", "--name", name, env=env(home))
    assert started.returncode == 0, started.stderr
    assert "the deployer follows" in started.stdout and "webhook" in started.stdout
    secret_file = home.paths.deployer_state / "webhook.secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    secret = secret_file.read_text().strip()
    assert secret not in started.stdout + started.stderr
    # `duration promote` on another host or the MLflow UI: only the registry changes
    t0 = time.monotonic()
    uris.set_production(name, "2")
    assert until(lambda: served_version(home) == "2", timeout=60), deployer_log(home)
    took = time.monotonic() - t0

    def finished():
        runs = deploy_runs(name)
        return not runs.empty and set(runs["status"]) == {"FINISHED"}

    assert until(finished, timeout=30)  # the run ends just after the switch
    runs = deploy_runs(name)
    assert runs.iloc[0]["tags.trigger"] == "webhook" and runs.iloc[0]["tags.outcome"] == "deployed"
    assert "webhook model_version_alias.created production v2" in deployer_log(home)
    assert took < 60
    assert secret not in deployer_log(home)

    # creating the webhook again (a second `serve start`) leaves one
    again = invoke("serve", "start", "--name", name, env=env(home))
    assert again.returncode == 0, again.stderr
    hooks = [w for w in MlflowClient().list_webhooks() if w.url == home.automate.hook_url]
    assert len(hooks) == 1

    # forged, stale, foreign and unsigned deliveries are refused, one log line each
    payload = {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "data": {"name": name, "alias": "production", "version": "1"},
    }
    body = json.dumps(payload).encode()
    now = int(time.time())
    forged = post_hook(home, body, signed("not-the-secret", body, now))
    stale = post_hook(home, body, signed(secret, body, now - 3600))
    other = json.dumps({**payload, "data": {**payload["data"], "name": "someone-else"}}).encode()
    foreign = post_hook(home, other, signed(secret, other, now))
    unsigned = post_hook(home, body, {"Content-Type": "application/json"})
    assert [r.status_code for r in (forged, stale, foreign, unsigned)] == [403] * 4
    said = deployer_log(home)
    assert "bad signature" in said and "a replay" in said and "someone-else" in said
    assert "unsigned" in said
    time.sleep(2)
    assert served_version(home) == "2"  # none of them moved anything
    health = requests.get(f"{home.automate.deployer_url}/health", timeout=5).json()
    assert health["refused"] >= 4 and health["model"] == name

    stopped = invoke("serve", "stop", env=env(home))
    assert stopped.returncode == 0 and "the deployer" in stopped.stdout, stopped.stderr
    assert not port_in_use(home.automate.hook_port) and life.daemon(home).pid() is None
    (hook_after,) = [w for w in MlflowClient().list_webhooks() if w.url == home.automate.hook_url]
    assert str(getattr(hook_after.status, "value", hook_after.status)) == "DISABLED"


def test_a_move_the_webhook_missed_is_served_by_the_reconcile_loop(home, name):
    s = home.model_copy(
        update={"automate": Automate(hook_port=home.automate.hook_port, reconcile_s=3)}
    )
    life.start_serving(s, name)
    # the receiver unreachable while the alias moves: MLflow delivers to a dead address
    (found,) = [w for w in MlflowClient().list_webhooks() if w.url == s.automate.hook_url]
    MlflowClient().update_webhook(found.webhook_id, url="http://127.0.0.1:9/hook")
    try:
        aliases.put_candidate(name, "2", Role.canary, 30)
        assert until(lambda: (read_state(s).candidate or None) is not None, timeout=60)
        c = read_state(s).candidate
        assert (c.version, c.role, c.weight) == ("2", Role.canary, 30)
        assert until(lambda: "reconcile: serve v2" in deployer_log(s), timeout=30)
        assert deploy_runs(name).iloc[0]["tags.trigger"] == "reconcile"
    finally:
        MlflowClient().update_webhook(found.webhook_id, url=s.automate.hook_url)
    assert "reconcile: serve v2 as a canary for 30% of clients: done" in deployer_log(s)
    life.stop_serving(s)


def test_a_failed_deploy_rolls_back_alerts_and_is_not_retried(home, name, tmp_path: Path):
    with alert_sink() as sink:
        a = Automate(hook_port=home.automate.hook_port, reconcile_s=2, alert_url=sink.url)
        s = home.model_copy(update={"automate": a})
        life.start_serving(s, name)
        broken = _broken_version(name, tmp_path / "dl")
        aliases.put_candidate(name, broken, Role.shadow)  # moved in the UI: nobody waits
        assert sink.wait_for(lambda m: any(x["event"] == "rollback" for x in m), timeout=90)
        (alert,) = [m for m in sink.messages if m["event"] == "rollback"]
        assert alert["version"] == broken and "what served goes on serving" in alert["text"]
        time.sleep(5)  # two reconcile passes: a failed step is not tried again
        assert sink.events().count("rollback") == 1
        st = service.status(s)
        assert st.healthy and [a.role for a in st.arms] == ["production"]
        # the alias stays where its mover put it: the deployer never moves one back
        assert MlflowClient().get_registered_model(name).aliases["shadow"] == broken
        assert deploy_runs(name).iloc[0]["tags.outcome"] == "failed"
        kept = [json.loads(x) for x in s.paths.alerts_log.read_text().splitlines()]
        assert [k["event"] for k in kept] == ["rollback"] and kept[0]["delivered"]
        # a command that moves an alias and waits takes it back when the deploy fails
        proc = invoke("deploy", "--name", name, "--canary", broken, env=env(s))
        assert proc.returncode == 1 and "could not serve" in proc.stderr, proc.stderr
        assert "canary" not in MlflowClient().get_registered_model(name).aliases
        life.stop_serving(s)
