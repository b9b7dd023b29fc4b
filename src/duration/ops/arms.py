"""A candidate beside Production: a canary that answers a share of the clients, or a shadow
that scores every request and answers no one; then finish (the candidate becomes
Production, in the registry and in traffic) or abort (Production alone again).

One candidate at a time: a second is refused unless forced (it then replaces the first).
Each step is a run in the deployments experiment, as deploys are, and takes the deploy
lock. A candidate is smoke-tested before it sees any traffic; neither finish nor abort
drops a request (nginx reloads gracefully, and drained workers are stopped).
"""

from __future__ import annotations

from duration.errors import DurationError
from duration.ops.deploy import (
    SMOKE_ROWS,
    Deployment,
    Trigger,
    bring_up,
    deploy_lock,
    deploy_run,
    record,
    serving_now,
)
from duration.ops.specs import check_weight
from duration.registry import aliases
from duration.registry.lease import promote_lock
from duration.registry.uris import check_version, set_production
from duration.serving import service, workers
from duration.serving.state import CANDIDATES, Arm, Role, State, WorkerGroup
from duration.settings import Settings


def serving_state(settings: Settings, name: str) -> State:
    """The healthy Production of `name`, or a one-line refusal."""
    state = serving_now(settings, name)
    if state is None:
        raise DurationError(
            f"{name} is not serving here: start Production first (`make serve`), then add a "
            "canary or a shadow beside it"
        )
    return state


def check_new(state: State, version: str, role: Role, force: bool) -> None:
    if version == state.version:
        raise DurationError(
            f"version {version} already serves as Production: a {role} must be another version"
        )
    if (c := state.candidate) is not None and not force:
        raise DurationError(
            f"a {c.role} of version {c.version} is already serving (one candidate at a "
            "time): `duration deploy --finish` or `--abort` it first, or give --force "
            "to replace it"
        )


def start(
    settings: Settings,
    name: str,
    version: str,
    role: Role,
    weight: int = 0,
    rows: int = SMOKE_ROWS,
    force: bool = False,
    wait: float = 0.0,
    trigger: Trigger = Trigger.cli,
) -> Deployment:
    """Serve `version` beside Production as a canary (`weight`% of clients) or a shadow,
    after its smoke test."""
    if role not in CANDIDATES:
        raise DurationError(f"{role!r} is not a candidate's role: canary or shadow")
    role = Role(role)
    if role is Role.canary:
        check_weight(weight)
    with deploy_lock(settings, wait):
        check_version(name, version)
        state = serving_state(settings, name)
        check_new(state, version, role, force)
        share = weight if role is Role.canary else 100
        out = Deployment(
            model_name=name,
            version=version,
            previous_version=state.version,
            outcome=role.value,
            url=settings.serve.url,
            role=role,
            weight=share,
        )
        tags = {"role": role.value, "weight": str(share), "trigger": trigger.value}
        with deploy_run(name, version, f"{role}-v{version}", **tags) as run:
            out.run_id = run.info.run_id
            old = state.candidate

            def place(group: WorkerGroup) -> None:
                service.add_arm(settings, state, group, role, share)
                if old is not None:
                    workers.stop(old.group)  # replaced (--force), once drained

            bring_up(settings, name, version, rows, out, place, role=role)
            record(out, deployed=False)
        return out


def finish(
    settings: Settings,
    name: str,
    rows: int = SMOKE_ROWS,
    wait: float = 0.0,
    trigger: Trigger = Trigger.cli,
) -> Deployment:
    """The candidate becomes Production: its version in the registry (stage and alias,
    under the promote lock and lease; its candidate alias goes), then in traffic (fresh
    Production workers, smoke-tested, then one graceful switch). Production goes on serving
    until then."""
    with deploy_lock(settings, wait):
        state = serving_state(settings, name)
        c = candidate(state, "finish")
        out = _outcome(settings, name, state, c, "finished")
        tags = {"role": c.role.value, "trigger": trigger.value}
        with deploy_run(name, c.version, f"finish-v{c.version}", **tags) as run:
            out.run_id = run.info.run_id

            def place(group: WorkerGroup) -> None:
                with promote_lock(settings, name):
                    set_production(name, c.version)
                    aliases.clear(name)
                service.switch(settings, name, group)  # stops Production and the arm

            bring_up(settings, name, c.version, rows, out, place)
            record(out)
        return out


def abort(
    settings: Settings, name: str, wait: float = 0.0, trigger: Trigger = Trigger.cli
) -> Deployment:
    """Take the candidate out (its alias too); Production answers every request, as it did
    before."""
    with deploy_lock(settings, wait):
        state = serving_state(settings, name)
        c = candidate(state, "abort")
        out = _outcome(settings, name, state, c, "aborted")
        tags = {"role": c.role.value, "trigger": trigger.value}
        with deploy_run(name, c.version, f"abort-v{c.version}", **tags) as run:
            out.run_id = run.info.run_id
            aliases.clear(name, c.role)
            service.remove_arm(settings, state)
            record(out, deployed=False)
        return out


def _outcome(settings: Settings, name: str, state: State, c: Arm, outcome: str) -> Deployment:
    return Deployment(
        model_name=name,
        version=c.version,
        previous_version=state.version,
        outcome=outcome,
        url=settings.serve.url,
        role=c.role,
        weight=c.weight,
    )


def candidate(state: State, what: str) -> Arm:
    if state.candidate is None:
        raise DurationError(
            f"no canary or shadow is serving beside version {state.version}: nothing to "
            f"{what} (start one with `duration deploy --canary N --weight W` or --shadow N)"
        )
    return state.candidate
