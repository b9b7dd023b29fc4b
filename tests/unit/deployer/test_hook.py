"""The deployer's webhook check: MLflow's signature, the age, the model, what it is about."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from duration.deployer import hook

SECRET = "s3cret"
NOW = 1_800_000_000.0


def mlflow_signed(payload: dict, stamp: int, delivery: str = "abc") -> tuple[dict, bytes]:
    """Headers and body as MLflow 3.17's delivery makes them (mlflow/webhooks/delivery.py)."""
    body = json.dumps(payload)
    signed = f"{delivery}.{stamp}.{body}".encode()
    sig = base64.b64encode(hmac.new(SECRET.encode(), signed, hashlib.sha256).digest()).decode()
    headers = {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": str(stamp),
        "X-MLflow-Signature": f"v1,{sig}",
    }
    return headers, body.encode()


def alias_event(name="m", alias="production", version="3", action="created") -> dict:
    data = {"name": name, "alias": alias} | ({"version": version} if version else {})
    return {"entity": "model_version_alias", "action": action, "timestamp": "", "data": data}


def test_a_genuine_alias_move_is_acted_on():
    headers, body = mlflow_signed(alias_event(), int(NOW) - 5)
    d = hook.check(SECRET, headers, body, "m", NOW)
    assert (d.event, d.alias, d.version, d.verdict) == (
        "model_version_alias.created",
        "production",
        "3",
        hook.Verdict.act,
    )
    # header names have no case
    lower = {k.lower(): v for k, v in headers.items()}
    assert hook.check(SECRET, lower, body, "m", NOW).verdict is hook.Verdict.act


def test_what_does_not_change_serving_is_taken_but_ignored():
    for payload in (
        alias_event(alias="staging"),
        {
            "entity": "model_version_tag",
            "action": "set",
            "data": {"name": "m", "version": "3", "key": "test_rmse", "value": "5"},
        },
    ):
        headers, body = mlflow_signed(payload, int(NOW))
        assert hook.check(SECRET, headers, body, "m", NOW).verdict is hook.Verdict.ignore
    weight = {
        "entity": "model_version_tag",
        "action": "set",
        "data": {"name": "m", "version": "3", "key": "canary_weight", "value": "30"},
    }
    headers, body = mlflow_signed(weight, int(NOW))
    assert hook.check(SECRET, headers, body, "m", NOW).verdict is hook.Verdict.act
    headers, body = mlflow_signed(alias_event(action="deleted", version=None), int(NOW))
    d = hook.check(SECRET, headers, body, "m", NOW)
    assert d.verdict is hook.Verdict.act and d.version is None


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("secret", "bad signature"),
        ("body", "bad signature"),
        ("old", "a replay"),
        ("future", "a replay"),
        ("model", "about model 'other'"),
        ("unsigned", "unsigned"),
        ("garbage", "not an MLflow model version event"),
    ],
)
def test_forged_stale_foreign_or_broken_deliveries_are_refused(change, says):
    stamp = int(NOW) - {"old": 301, "future": -400}.get(change, 0)
    payload = alias_event(name="other" if change == "model" else "m")
    headers, body = mlflow_signed(payload, stamp)
    secret = "wrong" if change == "secret" else SECRET
    if change == "body":
        body = body.replace(b'"3"', b'"4"')
    if change == "unsigned":
        headers.pop("X-MLflow-Signature")
    if change == "garbage":
        body = b"[1, 2]"
        headers["X-MLflow-Signature"] = hook.signature(SECRET, "abc", str(stamp), body)
    with pytest.raises(hook.Refused, match=says):
        hook.check(secret, headers, body, "m", NOW)
