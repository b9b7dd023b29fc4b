"""One promote of a model per tracking server at a time, and one decision of a month by the
cycle: a lock file for commands on this host, then a lease kept as a tag of the registered
model for commands on other hosts."""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from duration.errors import DurationError
from duration.infra.files import exclusive
from duration.infra.proc import gone
from duration.settings import Settings
from duration.tracking.client import client, lost_insert

LEASE_TAG = "promote_lease"


def _lease(name: str, tag: str = LEASE_TAG) -> dict | None:
    """The lease `tag` recorded on the registered model, if any (unreadable counts as none)."""
    raw = client().get_registered_model(name).tags.get(tag)
    try:
        return dict(json.loads(raw)) if raw else None
    except ValueError:
        return None


def _free(lease: dict | None, me: str) -> bool:
    """True when nobody else holds `lease`: none, ours, expired, or its process on this host
    is gone (a promote killed with SIGKILL leaves its lease behind)."""
    if lease is None or lease.get("owner") == me or lease.get("until", 0) < time.time():
        return True
    since = int(lease.get("since", 0) * 1000)
    return gone(lease.get("host", ""), str(lease.get("pid", "")), since)


def _take(name: str, me: str, ttl: float, settle: float, tag: str = LEASE_TAG) -> bool:
    """Write our lease, let `settle` seconds pass, and hold it if our write is still there."""
    from mlflow.exceptions import MlflowException  # deferred: MLflow takes seconds to import

    host, now = socket.gethostname(), time.time()
    mine = {"owner": me, "host": host, "pid": os.getpid(), "since": now, "until": now + ttl}
    try:
        client().set_registered_model_tag(name, tag, json.dumps(mine))
    except MlflowException as e:  # two first writes at once: the other's insert won
        if not lost_insert(e):
            raise
        return False
    time.sleep(settle)
    return (_lease(name, tag) or {}).get("owner") == me


@contextmanager
def registry_lease(
    name: str,
    wait: float = 600.0,
    ttl: float = 900.0,
    settle: float = 1.0,
    tag: str = LEASE_TAG,
    what: str = "promote",
) -> Iterator[bool]:
    """Hold the model's lease `tag` (the promote lease by default), kept as a tag of the
    registered model on the tracking server, so that commands on different hosts take turns;
    yield True if another holder made this one wait.

    MLflow has no compare-and-set: a taker writes its lease, lets `settle` seconds pass, and
    holds it only if its own write is still the one there (the last of two writers wins, the
    other sees it and waits). A lease ends at release, at `ttl`, or when its process is gone.
    """
    me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline, waited = time.monotonic() + wait, False
    while True:
        lease = _lease(name, tag)
        if _free(lease, me) and _take(name, me, ttl, settle, tag):
            break
        waited = True
        if time.monotonic() > deadline:
            lease = _lease(name, tag)
            who = f"{lease.get('host')} (pid {lease.get('pid')})" if lease else "another host"
            raise DurationError(
                f"another {what} of {name}, on {who}, has held it for over {wait:.0f} s: try "
                f"again later, or if that one is dead delete the tag {tag} of {name} in the "
                "MLflow UI"
            )
        time.sleep(0.5 + random.random())
    try:
        yield waited
    finally:
        if (_lease(name, tag) or {}).get("owner") == me:
            client().delete_registered_model_tag(name, tag)


@contextmanager
def _held(
    settings: Settings,
    name: str,
    *,
    kind: str,
    key: str,
    busy: str,
    wait: float,
    ttl: float = 900.0,
    tag: str = LEASE_TAG,
) -> Iterator[bool]:
    """A lock file for `kind` of `key` on this host, then the registry lease `tag` on model
    `name`; yields True when either made this one wait."""
    digest = hashlib.sha256(f"{settings.tracking.url.rstrip('/')}|{key}".encode()).hexdigest()
    lock = settings.paths.lock_dir / f"{kind}-{digest[:16]}.lock"
    lease = registry_lease(name, wait, ttl=ttl, tag=tag, what=kind)
    with exclusive(lock, wait, busy) as here, lease as elsewhere:
        yield here or elsewhere


@contextmanager
def promote_lock(settings: Settings, name: str, wait: float = 600.0) -> Iterator[bool]:
    """One promote of a model per tracking server at a time: a lock file for promotes on this
    host, then the registry's lease for promotes on other hosts; yields True when it had to
    wait for another."""
    busy = f"another promote of {name} has run for over {wait:.0f} s: try again later"
    with _held(settings, name, kind="promote", key=name, busy=busy, wait=wait) as waited:
        yield waited


MONTH_TAG = "cycle_lease_{month}"


@contextmanager
def month_lock(settings: Settings, name: str, month: str, wait: float = 3600.0) -> Iterator[bool]:
    """One decision of `month` for model `name` per tracking server, whichever host runs the
    cycle: a lock file here, then the lease `cycle_lease_MONTH` on the registered model (held
    up to an hour, the longest a retrain may take). Yields True when it waited for another."""
    busy = f"another cycle of {name} for {month} has run here for over {wait:.0f} s"
    with _held(
        settings,
        name,
        kind="cycle",
        key=f"{name}|{month}",
        busy=busy,
        wait=wait,
        ttl=3600.0,
        tag=MONTH_TAG.format(month=month),
    ) as waited:
        yield waited
