"""What serves over HTTP, changed safely: Production's workers behind the proxy, and at most
one candidate arm beside them (a canary answering a share of the clients, or a shadow that
scores a mirror of every request and answers no one).

`switch` points the proxy at a new Production and stops what served before (the candidate
too) once the proxy has drained it (a graceful stop flushes its log); `add_arm` and
`remove_arm` put a candidate in and take it out the same way. Every change is recorded in
`serve.json` (`duration.serving.state`); `status` asks the processes themselves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from duration.infra.net import is_healthy
from duration.infra.proc import alive, stop_group
from duration.serving import log_read, proxy, workers
from duration.serving.state import (
    Arm,
    Role,
    State,
    WorkerGroup,
    now,
    read_state,
    state_file,
    write_state,
    write_targets,
)
from duration.settings import Settings


def switch(settings: Settings, name: str, group: WorkerGroup) -> State:
    """Point the proxy at `group` as Production alone (starting the proxy if needed); stop
    the old Production and any candidate once drained."""
    old = read_state(settings)
    master = proxy.apply(settings, proxy.Route(production_port=group.port))
    state = State(
        name=name,
        version=group.version,
        url=settings.serve.url,
        backend_port=group.port,
        backend_pid=group.pid,
        server_pid=group.server_pid,
        proxy_pid=master,
        started_at=now(),
    )
    write_state(settings, state)
    for stale in old.groups() if old is not None else []:
        if stale.pid != group.pid:
            workers.stop(stale)
    return state


def add_arm(settings: Settings, state: State, group: WorkerGroup, role: Role, weight: int) -> State:
    """Put `group` beside Production as a canary (`weight`% of clients) or a shadow."""
    arm = Arm(
        version=group.version,
        role=role,
        weight=weight,
        port=group.port,
        pid=group.pid,
        started_at=now(),
    )
    new = replace(state, candidate=arm)
    new = replace(new, proxy_pid=proxy.apply(settings, proxy.route(new)))
    write_state(settings, new)
    return new


def remove_arm(settings: Settings, state: State) -> State:
    """Take the candidate out: Production answers every request, then the candidate's
    workers stop once the proxy has drained them."""
    new = replace(state, candidate=None)
    new = replace(new, proxy_pid=proxy.apply(settings, proxy.route(new)))
    write_state(settings, new)
    if state.candidate is not None:
        workers.stop(state.candidate.group)
    return new


@contextmanager
def started(
    settings: Settings, name: str, version: str, role: Role = Role.production, weight: int = 0
) -> Iterator[WorkerGroup]:
    """Start `version` beside whatever serves; if the block fails before it serves, stop
    it (what served before goes on serving)."""
    proxy.check_port(settings)
    candidate_weight = None if role is Role.production else weight
    spec = workers.spec(settings, name, version, role, candidate_weight)
    group = workers.start_group(settings, spec)
    try:
        yield group
    except BaseException:
        serving = read_state(settings)
        if serving is None or group.pid not in serving.pids():
            workers.stop(group)
        raise


@dataclass(frozen=True, kw_only=True)
class ArmStatus:
    """One arm, as its processes answer."""

    version: str
    role: Role
    weight: int
    healthy: bool
    pid: int
    workers: list[int]


@dataclass(frozen=True, kw_only=True)
class LogStatus:
    """The prediction log: on or off, where, and what the live workers count."""

    enabled: bool
    folder: str
    flush_s: float | None = None
    counts: log_read.LogCounts | None = None


@dataclass(frozen=True, kw_only=True)
class ServingStatus:
    """What `duration serve status` reports (exit 1 unless `healthy`)."""

    url: str
    model_name: str | None = None
    version: str | None = None
    pid: int | None = None
    workers: list[int] = field(default_factory=list)
    proxy_pid: int | None = None
    healthy: bool = False
    started_at: str | None = None
    arms: list[ArmStatus] = field(default_factory=list)
    logging: LogStatus | None = None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As `serve status` prints it: the log's counts beside its settings."""
        out = asdict(self)
        if self.logging is not None:
            counts = out["logging"].pop("counts") or {}
            out["logging"] |= counts
        return out


def _arm_status(version: str, role: Role, weight: int, group: WorkerGroup) -> ArmStatus:
    healthy = workers.up(group)
    return ArmStatus(
        version=version,
        role=role,
        weight=weight,
        healthy=healthy,
        pid=group.server_pid,
        workers=workers.worker_pids(group) if healthy else [],
    )


def _problem(state: State, arms: list[ArmStatus], healthy: bool, master: int | None) -> str | None:
    if not healthy:
        what = "the proxy is down" if master is None else f"version {state.version} is down"
        return f"{what}: `duration serve start` or `duration deploy` restores it"
    c = state.candidate
    if c is not None and not arms[1].healthy:
        return (
            f"the {c.role} arm (version {c.version}) is down, and Production answers for it: "
            "`duration deploy --abort` removes it"
        )
    return None


def status(settings: Settings) -> ServingStatus:
    """What serves, asked of the processes themselves (stale pid files are cleaned): each
    arm, its workers, and what the prediction log holds."""
    state = read_state(settings)
    master = proxy.pid(settings)
    if state is None:
        return ServingStatus(
            url=settings.serve.url,
            proxy_pid=master,
            problem="nothing is serving: run `duration serve start` or `duration deploy`",
        )
    arms = [_arm_status(state.version, Role.production, state.production_weight, state.production)]
    if (c := state.candidate) is not None:
        arms.append(_arm_status(c.version, c.role, c.weight, c.group))
    healthy = bool(master and arms[0].healthy and is_healthy(settings.serve.url))
    logging = log_status(settings)
    problem = _problem(state, arms, healthy, master)
    if problem is None and logging.counts is not None:
        problem = logging.counts.problem
    return ServingStatus(
        url=settings.serve.url,
        model_name=state.name,
        version=state.version,
        pid=state.server_pid,
        workers=arms[0].workers,
        proxy_pid=master,
        healthy=healthy,
        started_at=state.started_at,
        arms=arms,
        logging=logging,
        problem=problem,
    )


def log_status(settings: Settings) -> LogStatus:
    """The prediction log, as the live workers count it (`enabled`: false when off)."""
    folder = str(settings.paths.serve_log)
    if not settings.serve.log:
        return LogStatus(enabled=False, folder=folder)
    counts = log_read.counts(settings.paths.serve_state / "workers", lambda pid: alive(pid, ""))
    return LogStatus(enabled=True, folder=folder, flush_s=settings.serve.flush_s, counts=counts)


LOG_GRACE_S = 0.25  # a mirror's copy reaches the shadow this long after the answer, at most


def log_caught_up(settings: Settings, since: float) -> bool:
    """True when every ride answered before `since` (epoch s) is in the log's files: each
    live worker reported after it (rows are buffered before a client has its answer, and a
    shadow's copy lands within LOG_GRACE_S), with nothing pending or unscored."""
    c = log_status(settings).counts
    if c is None or not c.workers:
        return True
    return (
        c.as_of is not None
        and c.as_of > since + LOG_GRACE_S
        and c.pending_rides == 0
        and c.unscored_copies == 0
    )


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
    groups = []
    if state is not None:
        groups.append((f"version {state.version}", state.production))
        if (c := state.candidate) is not None:
            groups.append((f"{c.role} version {c.version}", c.group))
    for what, group in groups:
        if workers.running(group):
            stopped.append(what)
        workers.stop(group)
    for pid in workers.strays(settings, {g.pid for _, g in groups}):
        stop_group(pid)
        stopped.append(f"a stray worker group ({pid})")
    state_file(settings).unlink(missing_ok=True)
    write_targets(settings, None)
    return stopped
