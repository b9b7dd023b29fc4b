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
from duration.infra import serving
from duration.infra.backends import Backend, stop_backend
from duration.ops.deploy import SMOKE_ROWS, Deployment, bring_up, deploy_lock, deploy_run, record
from duration.registry.lease import promote_lock
from duration.registry.uris import check_version, set_production
from duration.settings import Settings

ROLES = ("canary", "shadow")


def check_weight(weight: int) -> None:
    if not 1 <= weight <= 99:
        raise DurationError(
            f"--weight {weight}: give the canary's share of clients, 1-99 (%); "
            "a shadow takes no weight, and --finish gives it everything"
        )


def _serving(settings: Settings, name: str) -> serving.State:
    """The healthy Production of `name`, or a one-line refusal."""
    state = serving.read_state(settings)
    st = serving.status(settings)
    if state is None or not st["healthy"] or state.name != name:
        raise DurationError(
            f"{name} is not serving here: start Production first (`make serve`), then add a "
            "canary or a shadow beside it"
        )
    return state


def start(
    settings: Settings, name: str, version: str, role: str, weight: int = 0,
    rows: int = SMOKE_ROWS, force: bool = False, wait: float = 0.0,
) -> Deployment:  # fmt: skip
    """Serve `version` beside Production as a canary (`weight`% of clients) or a shadow,
    after its smoke test."""
    if role not in ROLES:
        raise DurationError(f"{role!r} is not a candidate's role: canary or shadow")
    if role == "canary":
        check_weight(weight)
    with deploy_lock(settings, wait):
        check_version(name, version)
        state = _serving(settings, name)
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
        share = weight if role == "canary" else 100
        out = Deployment(
            model_name=name, version=version, previous_version=state.version, outcome=role,
            url=settings.serve.url, role=role, weight=share,
        )  # fmt: skip
        with deploy_run(name, version, f"{role}-v{version}", role=role,
                        weight=str(share)) as run:  # fmt: skip
            out.run_id = run.info.run_id
            old = state.candidate

            def place(backend: Backend) -> None:
                serving.add_arm(settings, state, backend, role, share)
                if old is not None:
                    stop_backend(old.backend)  # replaced (--force), once drained

            bring_up(settings, name, version, rows, out, place, role=role)
            record(out, deployed=False)
        return out


def finish(settings: Settings, name: str, rows: int = SMOKE_ROWS, wait: float = 0.0) -> Deployment:
    """The candidate becomes Production: its version in the registry (stage and alias,
    under the promote lock and lease), then in traffic (fresh Production workers, smoke-
    tested, then one graceful switch). Production goes on serving until then."""
    with deploy_lock(settings, wait):
        state = _serving(settings, name)
        c = _candidate(state, "finish")
        out = Deployment(
            model_name=name, version=c.version, previous_version=state.version,
            outcome="finished", url=settings.serve.url, role=c.role, weight=c.weight,
        )  # fmt: skip
        with deploy_run(name, c.version, f"finish-v{c.version}", role=c.role) as run:
            out.run_id = run.info.run_id

            def place(backend: Backend) -> None:
                with promote_lock(settings, name):
                    set_production(name, c.version)
                serving.switch(settings, name, backend)  # stops Production and the arm

            bring_up(settings, name, c.version, rows, out, place)
            record(out)
        return out


def abort(settings: Settings, name: str, wait: float = 0.0) -> Deployment:
    """Take the candidate out; Production answers every request, as it did before."""
    with deploy_lock(settings, wait):
        state = _serving(settings, name)
        c = _candidate(state, "abort")
        out = Deployment(
            model_name=name, version=c.version, previous_version=state.version,
            outcome="aborted", url=settings.serve.url, role=c.role, weight=c.weight,
        )  # fmt: skip
        with deploy_run(name, c.version, f"abort-v{c.version}", role=c.role) as run:
            out.run_id = run.info.run_id
            serving.remove_arm(settings, state)
            record(out, deployed=False)
        return out


def _candidate(state: serving.State, what: str) -> serving.Arm:
    if state.candidate is None:
        raise DurationError(
            f"no canary or shadow is serving beside version {state.version}: nothing to "
            f"{what} (start one with `duration deploy --canary N --weight W` or --shadow N)"
        )
    return state.candidate
