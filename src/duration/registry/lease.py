"""One promote of a model per tracking server at a time: a lock file for promotes on this
host, then a lease kept on the registered model for promotes on other hosts."""

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


def _lease(name: str) -> dict | None:
    """The promote lease recorded on the registered model, if any (unreadable counts as none)."""
    raw = client().get_registered_model(name).tags.get(LEASE_TAG)
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


def _take(name: str, me: str, ttl: float, settle: float) -> bool:
    """Write our lease, let `settle` seconds pass, and hold it if our write is still there."""
    from mlflow.exceptions import MlflowException  # deferred: MLflow takes seconds to import

    host, now = socket.gethostname(), time.time()
    mine = {"owner": me, "host": host, "pid": os.getpid(), "since": now, "until": now + ttl}
    try:
        client().set_registered_model_tag(name, LEASE_TAG, json.dumps(mine))
    except MlflowException as e:  # two first writes at once: the other's insert won
        if not lost_insert(e):
            raise
        return False
    time.sleep(settle)
    return (_lease(name) or {}).get("owner") == me


@contextmanager
def registry_lease(
    name: str, wait: float = 600.0, ttl: float = 900.0, settle: float = 1.0
) -> Iterator[bool]:
    """Hold the model's promote lease, kept as a tag of the registered model on the tracking
    server, so that promotes from different hosts take turns; yield True if another holder
    made this one wait.

    MLflow has no compare-and-set: a taker writes its lease, lets `settle` seconds pass, and
    holds it only if its own write is still the one there (the last of two writers wins, the
    other sees it and waits). A lease ends at release, at `ttl`, or when its process is gone.
    """
    me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline, waited = time.monotonic() + wait, False
    while True:
        lease = _lease(name)
        if _free(lease, me) and _take(name, me, ttl, settle):
            break
        waited = True
        if time.monotonic() > deadline:
            lease = _lease(name)
            who = f"{lease.get('host')} (pid {lease.get('pid')})" if lease else "another host"
            raise DurationError(
                f"another promote of {name}, on {who}, has held it for over {wait:.0f} s: try "
                f"again later, or if that promote is dead delete the tag {LEASE_TAG} of {name} "
                "in the MLflow UI"
            )
        time.sleep(0.5 + random.random())
    try:
        yield waited
    finally:
        if (_lease(name) or {}).get("owner") == me:
            client().delete_registered_model_tag(name, LEASE_TAG)


@contextmanager
def promote_lock(settings: Settings, name: str, wait: float = 600.0) -> Iterator[bool]:
    """One promote of a model per tracking server at a time: a lock file for promotes on this
    host, then the registry's lease for promotes on other hosts; yields True when it had to
    wait for another."""
    key = hashlib.sha256(f"{settings.tracking.url.rstrip('/')}|{name}".encode()).hexdigest()
    busy = f"another promote of {name} has run for over {wait:.0f} s: try again later"
    lock = settings.paths.lock_dir / f"promote-{key[:16]}.lock"
    with exclusive(lock, wait, busy) as here, registry_lease(name, wait) as elsewhere:
        yield here or elsewhere
