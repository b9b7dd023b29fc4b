"""A registry webhook, checked: MLflow's HMAC signature (`v1,` + base64 of HMAC-SHA256 over
`delivery_id.timestamp.body`, with the webhook's secret), its age, and that it is about
this deployer's model and about what serves (an alias of `production`, `canary` or
`shadow`, or a canary's weight). Pure: no I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from duration.registry.aliases import WEIGHT_TAG
from duration.serving.state import Role

SIGNATURE = "X-MLflow-Signature"
TIMESTAMP = "X-MLflow-Timestamp"
DELIVERY = "X-MLflow-Delivery-Id"
MAX_AGE_S = 300.0  # older (or this far in the future) is refused: a replay
MAX_BODY = 64 * 1024
EVENTS = [
    "model_version_alias.created",
    "model_version_alias.deleted",
    "model_version_tag.set",
]
SERVING_ALIASES = {r.value for r in Role}


class Refused(Exception):
    """A webhook not taken: its reason is one line for the deployer's log."""


class Verdict(StrEnum):
    act = "act"  # about what serves: converge
    ignore = "ignore"  # genuine, about this model, but not about what serves


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """A checked webhook."""

    delivery_id: str
    event: str  # entity.action, e.g. model_version_alias.created
    model: str
    version: str | None  # none in an alias.deleted event
    alias: str | None  # an alias event's
    tag: str | None  # a tag event's key
    verdict: Verdict


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The signature MLflow sends for these values."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def check(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    model: str,
    now: float,
    max_age: float = MAX_AGE_S,
) -> Delivery:
    """The delivery, if it is genuine, fresh and about `model`; else Refused, in one line."""
    h = {k.lower(): v for k, v in headers.items()}  # HTTP header names have no case
    delivery_id, stamp = h.get(DELIVERY.lower(), ""), h.get(TIMESTAMP.lower(), "")
    sent = h.get(SIGNATURE.lower(), "")
    if not (delivery_id and stamp and sent):
        raise Refused("unsigned: no X-MLflow-Signature, -Timestamp or -Delivery-Id header")
    if not hmac.compare_digest(sent, signature(secret, delivery_id, stamp, body)):
        raise Refused(f"bad signature on delivery {delivery_id[:40]!r}")
    try:
        age = now - int(stamp)
    except ValueError:
        raise Refused(f"timestamp {stamp[:20]!r} is not a number") from None
    if abs(age) > max_age:
        raise Refused(f"delivery {delivery_id} is {age:.0f} s old: over {max_age:.0f} s, a replay")
    try:
        payload = json.loads(body)
        event = f"{payload['entity']}.{payload['action']}"
        data = payload["data"]
        name, version = str(data["name"]), data.get("version")
    except (ValueError, KeyError, TypeError):
        raise Refused(f"delivery {delivery_id}: not an MLflow model version event") from None
    if name != model:
        raise Refused(f"delivery {delivery_id} is about model {name[:80]!r}, not {model!r}")
    alias, tag = data.get("alias"), data.get("key")
    about = (event.startswith("model_version_alias.") and alias in SERVING_ALIASES) or (
        event == "model_version_tag.set" and tag == WEIGHT_TAG
    )
    return Delivery(
        delivery_id=delivery_id,
        event=event,
        model=name,
        version=None if version is None else str(version),
        alias=alias,
        tag=tag,
        verdict=Verdict.act if about else Verdict.ignore,
    )
