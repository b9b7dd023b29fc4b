"""What serves, brought to what the registry's aliases say (`duration.registry.aliases`).

`plan` compares the two and names the steps between them (pure); `converge` takes them,
each a deploy run tagged with its trigger. The deployer calls it when a webhook says an
alias moved, and every DURATION_RECONCILE_S; a command that moves an alias
(`deploy --canary`, the cycle's live mode) waits for the deployer to follow, or converges
itself when no deployer runs here.

A step that fails (a smoke test, a version that does not start) leaves what served serving
(its rollback), sends an alert, and is remembered: it is not tried again until an alias
moves again. Whoever moved the alias owns it: the deployer never moves one back.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from duration.alerts.channel import Alert, Event, Value, send
from duration.errors import DurationError
from duration.infra.files import write_atomic
from duration.ops import arms, deploy
from duration.ops.deploy import Deployment, Trigger
from duration.registry import aliases
from duration.registry.aliases import Wanted, wanted
from duration.serving.state import Role, read_state
from duration.settings import Settings


class Kind(StrEnum):
    deploy = "deploy"  # a new Production, after its smoke test (a candidate serving goes)
    finish = "finish"  # the candidate becomes Production
    start_arm = "start_arm"  # a canary or a shadow beside Production
    abort = "abort"  # the candidate goes


@dataclass(frozen=True, kw_only=True)
class Step:
    """One change to serving."""

    kind: Kind
    version: str
    role: Role | None = None
    weight: int = 0

    def said(self) -> str:
        share = f" for {self.weight}% of clients" if self.role is Role.canary else ""
        what = {
            Kind.deploy: "serve v{v} as Production",
            Kind.finish: "make the {r} v{v} Production",
            Kind.start_arm: "serve v{v} as a {r}" + share,
            Kind.abort: "take the {r} v{v} out",
        }[self.kind]
        return what.format(v=self.version, r=self.role.value if self.role else "")


@dataclass(frozen=True, kw_only=True)
class Serving:
    """What serves now: Production, and the candidate beside it."""

    production: str | None
    candidate: Role | None = None
    candidate_version: str | None = None
    weight: int = 0


def serving_now(settings: Settings, name: str) -> Serving:
    state = read_state(settings)
    if state is None or state.name != name:
        return Serving(production=None)
    c = state.candidate
    if c is None:
        return Serving(production=state.version)
    return Serving(
        production=state.version, candidate=c.role, candidate_version=c.version, weight=c.weight
    )


def plan(want: Wanted, now: Serving) -> list[Step]:
    """The steps from `now` to `want` (none when nothing serves: serving is started by a
    person, `duration serve start`, never by the registry)."""
    if now.production is None or want.production is None:
        return []
    steps: list[Step] = []
    candidate = (now.candidate, now.candidate_version, now.weight)
    if now.production != want.production:
        kind = Kind.finish if now.candidate_version == want.production else Kind.deploy
        steps.append(Step(kind=kind, version=want.production, role=now.candidate))
        candidate = (None, None, 0)
    wanted_candidate = (want.candidate, want.candidate_version, want.weight)
    if want.candidate_version in (None, want.production):
        wanted_candidate = (None, None, 0)
    if candidate != wanted_candidate:
        if wanted_candidate[0] is None and candidate[0] is not None:
            steps.append(Step(kind=Kind.abort, version=str(candidate[1]), role=candidate[0]))
        elif wanted_candidate[0] is not None:
            role, version, weight = wanted_candidate
            steps.append(Step(kind=Kind.start_arm, version=str(version), role=role, weight=weight))
    return steps


def _failed_path(settings: Settings) -> Path:
    return settings.paths.deployer_state / "failed.json"


def failed(settings: Settings, since: float = 0.0) -> list[Step]:
    """The steps that failed (recorded after `since`, a time.time()) and are not tried again
    until someone moves an alias."""
    try:
        raw = json.loads(_failed_path(settings).read_text())
        if raw["at"] < since:
            return []
        return [
            Step(**{**s, "kind": Kind(s["kind"]), "role": s["role"] and Role(s["role"])})
            for s in raw["steps"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _remember(settings: Settings, steps: list[Step]) -> None:
    raw = {"at": time.time(), "steps": [asdict(s) for s in steps]}
    write_atomic(_failed_path(settings), json.dumps(raw))


@dataclass(frozen=True, kw_only=True)
class Done:
    """One step taken: its deployment when this process took it, or why it failed."""

    step: Step
    deployment: Deployment | None = None
    problem: str | None = None  # None: it serves

    def said(self) -> str:
        return self.step.said() + (f": failed ({self.problem})" if self.problem else ": done")


def _take(settings: Settings, name: str, step: Step, trigger: Trigger, wait: float) -> Deployment:
    if step.kind is Kind.deploy:
        candidate = serving_now(settings, name).candidate is not None
        return deploy.deploy(settings, name, force=candidate, wait=wait, trigger=trigger)
    if step.kind is Kind.finish:
        return arms.finish(settings, name, wait=wait, trigger=trigger)
    if step.kind is Kind.abort:
        return arms.abort(settings, name, wait=wait, trigger=trigger)
    assert step.role is not None  # a start_arm step always names its role
    weight = step.weight if step.role is Role.canary else 0
    return arms.start(
        settings, name, step.version, step.role, weight, force=True, wait=wait, trigger=trigger
    )


def converge(settings: Settings, name: str, trigger: Trigger, wait: float = 600.0) -> list[Done]:
    """Take the steps from what serves to what the aliases say. A step that failed is tried
    again only when someone moves an alias (a webhook, a command), not by the reconcile loop."""
    want = wanted(name, settings.automate.live_weight)
    before = failed(settings) if trigger is Trigger.reconcile else []
    steps = [s for s in plan(want, serving_now(settings, name)) if s not in before]
    done: list[Done] = []
    for step in steps:
        try:
            done.append(Done(step=step, deployment=_take(settings, name, step, trigger, wait)))
        except DurationError as e:
            done.append(Done(step=step, problem=str(e)))
            text = f"{name}: could not {step.said()} ({e}); what served goes on serving"
            _alert(settings, name, Event.rollback, text, step)
            break  # the next steps assumed this one
        if step.kind is Kind.start_arm:
            _alert(settings, name, Event.live_arm, f"{name}: {step.said()}", step)
    if any(d.problem for d in done) or before:
        still = plan(want, serving_now(settings, name))
        _remember(settings, [d.step for d in done if d.problem] + [s for s in before if s in still])
    return done


def _alert(settings: Settings, name: str, event: Event, text: str, step: Step) -> None:
    fields: dict[str, Value] = {
        "model_name": name,
        "version": step.version,
        "step": step.kind.value,
    }
    if step.role is not None:
        fields |= {"role": step.role.value, "weight": step.weight}
    send(settings, Alert(event=event, text=text, fields=fields))


def deployer_answers(settings: Settings, name: str) -> bool:
    """True when this host's deployer follows model `name`'s aliases."""
    try:
        url = f"{settings.automate.deployer_url}/health"
        with urllib.request.urlopen(url, timeout=2.0) as r:  # noqa: S310 - http on loopback
            return bool(json.loads(r.read()).get("model") == name)
    except (OSError, ValueError, AttributeError):
        return False


def follow(
    settings: Settings, name: str, wait: float = 600.0, say: Callable[[str], object] = print
) -> list[Done]:
    """After an alias moved here: wait (up to `wait` s) for the deployer to bring serving to
    it; with no deployer running, converge in this process (trigger cli)."""
    since = time.time()
    planned = plan(wanted(name, settings.automate.live_weight), serving_now(settings, name))
    if not planned:
        return []
    if not deployer_answers(settings, name):
        say("the deployer does not run here (`duration serve start` starts it): serving now")
        return converge(settings, name, Trigger.cli, wait)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        steps = plan(wanted(name, settings.automate.live_weight), serving_now(settings, name))
        if not steps:
            return [Done(step=s) for s in planned]
        if all(s in failed(settings, since) for s in steps):
            why = f"the deployer's smoke test or start failed: see {deployer_log(settings)}"
            return [Done(step=s, problem=why) for s in steps]
        time.sleep(0.5)
    raise DurationError(
        f"the deployer has not brought serving to the registry's aliases within {wait:.0f} s: "
        f"see {deployer_log(settings)}"
    )


def moved(
    settings: Settings,
    name: str,
    move: Callable[[], object],
    wait: float = 600.0,
    say: Callable[[str], object] = print,
    before: Wanted | None = None,
) -> list[Done]:
    """Move the aliases (`move`), then `follow`; when serving cannot follow, what served goes
    on serving and the aliases go back where they were (`before`, default: as `move` found
    them): whoever moves them owns them."""
    before = before or aliases.wanted(name, settings.automate.live_weight)
    move()
    done = follow(settings, name, wait, say)
    if any(d.problem for d in done):
        aliases.restore(name, before)
    return done


def deployer_log(settings: Settings) -> Path:
    return settings.paths.deployer_state / "deployer.log"
