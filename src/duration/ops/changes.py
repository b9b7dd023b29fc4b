"""A change to serving that a person asks for (`duration deploy`): checked against what
serves, made in the registry (the aliases), then followed: by the deployer when it runs
here, else by this process (`duration.ops.converge.follow`). One alias move gives one
deploy, whoever makes it. When that deploy fails, what served goes on serving, and this
command moves the aliases back: it moved them.

Only a redeploy of what is already Production (`duration deploy`, `--force`) and a first
deploy with nothing serving are made here directly: no alias moves for them.
"""

from __future__ import annotations

from collections.abc import Callable

from duration.ops import arms, deploy
from duration.ops.converge import Done, Kind, Step, moved
from duration.ops.specs import ServingChange
from duration.registry import aliases
from duration.registry.lease import promote_lock
from duration.registry.uris import check_version, set_production
from duration.serving.state import Role, read_state
from duration.settings import Settings


def apply(
    settings: Settings,
    name: str,
    change: ServingChange,
    rows: int = deploy.SMOKE_ROWS,
    wait: float = 0.0,
    say: Callable[[str], object] = print,
) -> list[Done]:
    """Make `change`; what was done to serving, step by step."""
    change.check()
    if not change.moves_aliases or (change.version and read_state(settings) is None):
        d = deploy.deploy(settings, name, change.version, rows, change.force, wait)
        return [Done(step=Step(kind=Kind.deploy, version=d.version), deployment=d)]
    return moved(settings, name, lambda: _move(settings, name, change, wait), max(wait, 600), say)


def _move(settings: Settings, name: str, change: ServingChange, wait: float) -> None:
    if change.version is not None:
        check_version(name, change.version)
        deploy.check_no_candidate(settings, change.force)
        with promote_lock(settings, name, wait=max(wait, 60.0)):
            set_production(name, change.version)
            aliases.clear(name)
    else:
        _move_candidate(settings, name, change)


def _move_candidate(settings: Settings, name: str, change: ServingChange) -> None:
    state = arms.serving_state(settings, name)
    if change.canary is not None or change.shadow is not None:
        role = Role.canary if change.canary is not None else Role.shadow
        version = change.canary or change.shadow or ""
        arms.check_new(state, version, role, change.force)
        aliases.put_candidate(name, version, role, change.weight if role is Role.canary else 0)
    elif change.finish:
        c = arms.candidate(state, "finish")
        with promote_lock(settings, name):
            set_production(name, c.version)
            aliases.clear(name)
    else:
        c = arms.candidate(state, "abort")
        aliases.clear(name, c.role)
