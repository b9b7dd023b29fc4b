"""What serves over HTTP: Production's workers behind the nginx proxy, and at most one
candidate arm beside them (a canary answering a share of the clients, or a shadow that
scores a mirror of every request and answers no one).

`switch` points the proxy at a new Production and stops what served before (the
candidate too) once the proxy has drained it (a graceful stop flushes its log); `add_arm`
and `remove_arm` put a candidate in and take it out the same way. What serves is recorded
in `serve.json` under `paths.serve_state`, written atomically after every change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from duration.infra import prediction_log, proxy
from duration.infra.backends import Backend, start_backend, stop_backend, up, workers
from duration.infra.files import write_atomic
from duration.infra.net import is_healthy
from duration.infra.proc import alive
from duration.settings import Settings


@dataclass(frozen=True, kw_only=True)
class Arm:
    """The candidate beside Production: its role, its share and its workers."""

    version: str
    role: str  # canary or shadow
    weight: int  # a canary's share of clients, %; a shadow sees every request (100)
    port: int
    pid: int
    started_at: str

    @property
    def backend(self) -> Backend:
        return Backend(version=self.version, port=self.port, pid=self.pid, server_pid=self.pid)


@dataclass(frozen=True, kw_only=True)
class State:
    """What is serving: written atomically to serve.json after every change."""

    name: str
    version: str
    url: str
    backend_port: int
    backend_pid: int
    server_pid: int
    proxy_pid: int
    started_at: str
    candidate: Arm | None = None

    @property
    def backend(self) -> Backend:
        return Backend(
            version=self.version, port=self.backend_port, pid=self.backend_pid,
            server_pid=self.server_pid,
        )  # fmt: skip

    @property
    def route(self) -> proxy.Route:
        c = self.candidate
        return proxy.Route(
            name=self.name, production_port=self.backend_port,
            candidate=c.role if c else None, candidate_port=c.port if c else None,
            weight=c.weight if c else 0,
        )  # fmt: skip


def state_file(settings: Settings) -> Path:
    return settings.paths.serve_state / "serve.json"


def read_state(settings: Settings) -> State | None:
    """The recorded state, or None when nothing was started (or the file is unreadable)."""
    try:
        raw = json.loads(state_file(settings).read_text())
        arm = raw.pop("candidate", None)
        return State(**raw, candidate=Arm(**arm) if arm else None)
    except (OSError, ValueError, TypeError):
        return None


def write_state(settings: Settings, state: State) -> None:
    write_atomic(state_file(settings), json.dumps(asdict(state), indent=2) + "\n")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _apply(settings: Settings, route: proxy.Route) -> int:
    """Write the proxy's config for `route` and start or reload it (draining the old
    workers' requests); the proxy's pid."""
    proxy.write_conf(settings, route)
    master = proxy.pid(settings)
    if master is None:
        return proxy.start(settings)
    proxy.reload(settings, master)
    return master


def switch(settings: Settings, name: str, backend: Backend) -> State:
    """Point the proxy at `backend` as Production alone (starting the proxy if needed);
    stop the old Production and any candidate once drained."""
    old = read_state(settings)
    master = _apply(settings, proxy.Route(name=name, production_port=backend.port))
    state = State(
        name=name, version=backend.version, url=settings.serve.url, backend_port=backend.port,
        backend_pid=backend.pid, server_pid=backend.server_pid, proxy_pid=master,
        started_at=_now(),
    )  # fmt: skip
    write_state(settings, state)
    if old is not None:
        if old.backend_pid != backend.pid:
            stop_backend(old.backend)
        if old.candidate is not None and old.candidate.pid != backend.pid:
            stop_backend(old.candidate.backend)
    return state


def add_arm(settings: Settings, state: State, backend: Backend, role: str, weight: int) -> State:
    """Put `backend` beside Production as a canary (`weight`% of clients) or a shadow."""
    arm = Arm(version=backend.version, role=role, weight=weight, port=backend.port,
              pid=backend.pid, started_at=_now())  # fmt: skip
    new = replace(state, candidate=arm)
    master = _apply(settings, new.route)
    new = replace(new, proxy_pid=master)
    write_state(settings, new)
    return new


def remove_arm(settings: Settings, state: State) -> State:
    """Take the candidate out: Production answers every request, then the candidate's
    workers stop once the proxy has drained them."""
    new = replace(state, candidate=None)
    master = _apply(settings, new.route)
    new = replace(new, proxy_pid=master)
    write_state(settings, new)
    if state.candidate is not None:
        stop_backend(state.candidate.backend)
    return new


@contextmanager
def started(
    settings: Settings, name: str, version: str, role: str = "production"
) -> Iterator[Backend]:
    """Start `version` beside whatever serves; if the block fails before it serves, stop
    it (what served before goes on serving)."""
    proxy.check_port(settings)
    backend = start_backend(settings, name, version, arm=role)
    try:
        yield backend
    except BaseException:
        serving = read_state(settings)
        pids = set() if serving is None else {serving.backend_pid}
        if serving is not None and serving.candidate is not None:
            pids.add(serving.candidate.pid)
        if backend.pid not in pids:
            stop_backend(backend)
        raise


def _arm_status(version: str, role: str, weight: int, backend: Backend) -> dict:
    healthy = up(backend)
    return {"version": version, "role": role, "weight": weight, "healthy": healthy,
            "pid": backend.server_pid, "workers": workers(backend) if healthy else []}  # fmt: skip


def status(settings: Settings) -> dict:
    """What serves, asked of the processes themselves (stale pid files are cleaned): each
    arm, its workers, and what the prediction log holds."""
    state = read_state(settings)
    master = proxy.pid(settings)
    out: dict = {"url": settings.serve.url, "model_name": None, "version": None, "pid": None,
                 "workers": [], "proxy_pid": master, "healthy": False, "started_at": None,
                 "arms": []}  # fmt: skip
    if state is None:
        out["problem"] = "nothing is serving: run `duration serve start` or `duration deploy`"
        return out
    c = state.candidate
    share = 100 - c.weight if c is not None and c.role == "canary" else 100
    arms = [_arm_status(state.version, "production", share, state.backend)]
    if c is not None:
        arms.append(_arm_status(c.version, c.role, c.weight, c.backend))
    out.update(
        model_name=state.name, version=state.version, pid=state.server_pid,
        workers=arms[0]["workers"], started_at=state.started_at, arms=arms,
        healthy=bool(master and arms[0]["healthy"] and is_healthy(settings.serve.url)),
    )  # fmt: skip
    if not out["healthy"]:
        what = "the proxy is down" if master is None else f"version {state.version} is down"
        out["problem"] = f"{what}: `duration serve start` or `duration deploy` restores it"
    elif c is not None and not arms[1]["healthy"]:
        out["problem"] = (
            f"the {c.role} arm (version {c.version}) is down, and Production answers for it: "
            "`duration deploy --abort` removes it"
        )
    out["logging"] = log_status(settings)
    if "problem" in out["logging"] and "problem" not in out:
        out["problem"] = out["logging"]["problem"]
    return out


def log_status(settings: Settings) -> dict:
    """The prediction log, as the live workers count it (`enabled`: false when off)."""
    if not settings.serve.log:
        return {"enabled": False, "folder": str(settings.paths.serve_log)}
    counts = prediction_log.status(
        settings.paths.serve_state / "workers", lambda pid: alive(pid, "")
    )
    return {"enabled": True, "folder": str(settings.paths.serve_log),
            "flush_s": settings.serve.flush_s, **counts}  # fmt: skip


LOG_GRACE_S = 0.25  # a mirror's copy reaches the shadow this long after the answer, at most


def log_caught_up(settings: Settings, since: float) -> bool:
    """True when every ride answered before `since` (epoch s) is in the log's files: each
    live worker reported after it (rows are buffered before a client has its answer, and a
    shadow's copy lands within LOG_GRACE_S), with nothing pending or unscored."""
    st = log_status(settings)
    if not st["enabled"] or not st["workers"]:
        return True
    return (st["as_of"] > since + LOG_GRACE_S and st["pending_rides"] == 0
            and st["unscored_copies"] == 0)  # fmt: skip


def wait_for_log(settings: Settings, since: float, timeout: float) -> bool:
    """Wait (up to `timeout` s) until `log_caught_up(settings, since)`; say whether it did."""
    deadline = time.monotonic() + timeout
    while not log_caught_up(settings, since):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def running(settings: Settings) -> bool:
    """True when a proxy runs for this home with a recorded version behind it."""
    return read_state(settings) is not None and proxy.pid(settings) is not None


def stop(settings: Settings) -> list[str]:
    """Stop the proxy and every arm's workers; return what was stopped."""
    stopped = ["proxy"] if proxy.stop(settings) else []
    state = read_state(settings)
    if state is not None:
        backends = [(f"version {state.version}", state.backend)]
        if state.candidate is not None:
            c = state.candidate
            backends.append((f"{c.role} version {c.version}", c.backend))
        for what, backend in backends:
            if alive(backend.pid, "scoring_app"):
                stopped.append(what)
            stop_backend(backend)
        state_file(settings).unlink(missing_ok=True)
    return stopped
