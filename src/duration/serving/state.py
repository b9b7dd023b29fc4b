"""What serves, as recorded: Production's group of workers and at most one candidate arm
beside it, in `serve.json` under `paths.serve_state`, written atomically after every change.
Pure data and its file; `duration.serving.service` changes it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from duration.infra.files import write_atomic
from duration.infra.net import LOOPBACK
from duration.settings import Settings


class Role(StrEnum):
    """Who a group of scoring workers answers as (not a team server user's role)."""

    production = "production"  # answers the clients
    canary = "canary"  # answers a share of the clients
    shadow = "shadow"  # scores a copy of every request and answers no one


CANDIDATES = (Role.canary, Role.shadow)


@dataclass(frozen=True, kw_only=True)
class WorkerGroup:
    """One version's scoring workers: a uvicorn supervisor and the workers it restarts."""

    version: str
    port: int
    pid: int  # the process group: the uvicorn supervisor, its workers inside
    server_pid: int  # the process that answers for the group (the supervisor)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class Arm:
    """The candidate beside Production: its role, its share and its workers."""

    version: str
    role: Role
    weight: int  # a canary's share of clients, %; a shadow sees every request (100)
    port: int
    pid: int
    started_at: str

    @property
    def group(self) -> WorkerGroup:
        return WorkerGroup(version=self.version, port=self.port, pid=self.pid, server_pid=self.pid)


@dataclass(frozen=True, kw_only=True)
class State:
    """What is serving (the keys of serve.json: `backend_*` are Production's group)."""

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
    def production(self) -> WorkerGroup:
        return WorkerGroup(
            version=self.version,
            port=self.backend_port,
            pid=self.backend_pid,
            server_pid=self.server_pid,
        )

    @property
    def production_weight(self) -> int:
        """Production's share of the clients, %: what a canary leaves it."""
        c = self.candidate
        return 100 - c.weight if c is not None and c.role is Role.canary else 100

    def groups(self) -> list[WorkerGroup]:
        """Every arm's workers: Production's, then the candidate's."""
        return [self.production] + ([self.candidate.group] if self.candidate else [])

    def pids(self) -> set[int]:
        """The process groups of every arm."""
        return {g.pid for g in self.groups()}


def now() -> str:
    """The time an arm started, as serve.json records it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def state_file(settings: Settings) -> Path:
    return settings.paths.serve_state / "serve.json"


def read_state(settings: Settings) -> State | None:
    """The recorded state, or None when nothing was started (or the file is unreadable)."""
    try:
        raw = json.loads(state_file(settings).read_text())
        arm = raw.pop("candidate", None)
        candidate = Arm(**{**arm, "role": Role(arm["role"])}) if arm else None
        return State(**raw, candidate=candidate)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def write_state(settings: Settings, state: State) -> None:
    write_atomic(state_file(settings), json.dumps(asdict(state), indent=2) + "\n")
    write_targets(settings, state)


def targets_file(settings: Settings) -> Path:
    """The worker groups Prometheus scrapes (its file_sd format), rewritten on each change."""
    return settings.paths.serve_state / "metrics" / "targets.json"


def write_targets(settings: Settings, state: State | None) -> None:
    """One scrape target a worker group, labelled with its arm and version (none: nothing
    serves). Prometheus re-reads the file: a deploy needs no restart of it."""
    groups = []
    if state is not None and settings.serve.metrics:
        arms = [(Role.production, state.production)]
        if (c := state.candidate) is not None:
            arms.append((c.role, c.group))
        for role, group in arms:
            labels = {"arm": role.value, "version": group.version, "model": state.name}
            groups.append({"targets": [f"{LOOPBACK}:{group.port}"], "labels": labels})
    path = targets_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(groups, indent=2) + "\n")
