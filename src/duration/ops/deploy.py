"""Deploy a registered version safely: start it beside the serving one, smoke-test it over
HTTP against in-process predictions, then switch the proxy to it. Roll back with a version.

The registry is not a deployment tool: this step is what moves a Production version into
service. Each deploy is one run in the `...-deployments` experiment; one deploy at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from duration.core.records import raw_records
from duration.data import prepare
from duration.errors import DurationError
from duration.infra.files import exclusive
from duration.registry.uris import check_version, load, require, set_production
from duration.serving import client as serving_client
from duration.serving import service, workers
from duration.serving.state import Role, State, WorkerGroup, read_state
from duration.settings import Settings
from duration.tracking import experiments, runs
from duration.tracking.client import client
from duration.tracking.names import DEPLOY_EXPERIMENT


class Trigger(StrEnum):
    """What started a deploy (its run's `trigger` tag)."""

    cli = "cli"  # a person's `duration deploy` (or serve start)
    webhook = "webhook"  # the registry's webhook: an alias moved
    reconcile = "reconcile"  # the deployer found serving and the aliases apart


SMOKE_TOLERANCE = 1e-4  # minutes: HTTP answers must match in-process predictions this closely
SMOKE_ROWS = 200


@dataclass(frozen=True, kw_only=True)
class Smoke:
    """A smoke test: real rides of a month sent over HTTP, against in-process predictions."""

    rows: int
    month: str
    max_abs_diff: float
    http_s: float


@dataclass(kw_only=True)
class Deployment:
    """The outcome of `deploy`."""

    model_name: str
    version: str
    previous_version: str | None
    outcome: str  # deployed, rolled-back, already-serving; canary, shadow, finished, aborted
    url: str
    timings: dict[str, float] = field(default_factory=dict)  # start_s, smoke_s, switch_s
    smoke: Smoke | None = None
    run_id: str | None = None
    role: Role = Role.production  # or the candidate's: canary, shadow
    weight: int = 100  # the share of clients it answers, %


@contextmanager
def deploy_lock(settings: Settings, wait: float = 0.0) -> Iterator[None]:
    """One deploy (or serve start/stop) at a time: the second waits `wait` s, then refuses."""
    path = settings.paths.serve_state / "deploy.lock"
    busy = (
        f"another deploy is running (it holds {path}): wait for it to end, then run this "
        "again (or give --wait SECONDS)"
    )
    with exclusive(path, wait, busy):
        yield


def production_version(name: str) -> str:
    """The version `models:/NAME@production` resolves to, or a one-line error."""
    require(name)
    version = client().get_registered_model(name).aliases.get("production")
    if version is None:
        raise DurationError(
            f"{name} has no Production version: promote one first (`duration promote`)"
        )
    return str(version)


def smoke_rides(settings: Settings, color: str, rows: int) -> tuple[pd.DataFrame, str]:
    """(raw ride records, month): `rows` real rides of the newest labelled month in data/."""
    month = prepare.newest_month(settings, color)
    if month is None:
        raise DurationError(
            f"no prepared {color} month in {settings.paths.processed} for the smoke test: "
            f"run `duration prepare --color {color} --month YYYY-MM` first"
        )
    rides = prepare.load_processed(settings, color, month)
    rides = rides.sample(min(rows, len(rides)), random_state=0).reset_index(drop=True)
    records = raw_records(rides.drop(columns=["duration", "dropoff_datetime"]), color)
    return records, month


def smoke_test(url: str, name: str, version: str, records: pd.DataFrame, month: str) -> Smoke:
    """Send `records` to `url`/invocations and compare with the registry's model in-process."""
    t0 = time.perf_counter()
    served = serving_client.smoke(url, version, records)
    http_s = time.perf_counter() - t0
    expected = load(f"models:/{name}/{version}").predict(records)
    if served.shape != expected.shape:
        raise DurationError(
            f"version {version} answered {served.size} predictions for {len(records)} rides"
        )
    diff = float(np.max(np.abs(served - expected))) if served.size else 0.0
    if not diff <= SMOKE_TOLERANCE:
        raise DurationError(
            f"version {version} answers differ from its in-process predictions by up to "
            f"{diff:.3g} min (allowed {SMOKE_TOLERANCE}): it is not served as registered"
        )
    return Smoke(rows=len(records), month=month, max_abs_diff=diff, http_s=round(http_s, 3))


def serving_now(settings: Settings, name: str) -> State | None:
    """What serves `name` healthily here, or None."""
    st = service.status(settings)
    return read_state(settings) if st.healthy and st.model_name == name else None


def bring_up(
    settings: Settings,
    name: str,
    version: str,
    rows: int,
    out: Deployment,
    place: Callable[[WorkerGroup], object],
    role: Role = Role.production,
) -> None:
    """Start `version` as `role`, smoke-test it, then `place` it (switch to it, or add it
    as an arm); what serves goes on serving until then, and if anything fails."""
    color = check_version(name, version).tags.get("color", "green")
    records, month = smoke_rides(settings, color, rows)
    t0 = time.perf_counter()
    with service.started(settings, name, version, role, out.weight) as group:
        out.timings["start_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        out.smoke = smoke_test(group.url, name, version, records, month)
        out.timings["smoke_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        place(group)
        out.timings["switch_s"] = round(time.perf_counter() - t0, 3)


def record(out: Deployment, deployed: bool = True, **params: object) -> None:
    """The deploy's params, timings and outcome on its run; when `deployed` (it serves as
    Production now), the version's deployed_at tag."""
    import mlflow  # deferred: MLflow takes seconds to import

    smoke = out.smoke
    mlflow.log_params(
        {
            "version": out.version,
            "previous_version": out.previous_version,
            "role": out.role.value,
            "weight": out.weight,
            "smoke_rows": smoke.rows if smoke else None,
            **params,
        }
    )
    metrics = {**out.timings}
    if smoke is not None:
        metrics["smoke_max_abs_diff"] = smoke.max_abs_diff
    mlflow.log_metrics(metrics)
    mlflow.set_tags({"outcome": out.outcome, "smoke_month": smoke.month if smoke else ""})
    if deployed:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        client().set_model_version_tag(out.model_name, out.version, "deployed_at", now)


def deploy(
    settings: Settings,
    name: str,
    version: str | None = None,
    rows: int = SMOKE_ROWS,
    force: bool = False,
    wait: float = 0.0,
    trigger: Trigger = Trigger.cli,
) -> Deployment:
    """Serve `version` (default: Production) safely; with a version, also make it Production."""
    with deploy_lock(settings, wait):
        target = version or production_version(name)
        current = serving_now(settings, name)
        out = Deployment(
            model_name=name,
            version=target,
            previous_version=current.version if current else None,
            outcome="deployed",
            url=settings.serve.url,
        )
        check_no_candidate(settings, force)
        if version is not None or (current and int(target) < int(current.version)):
            out.outcome = "rolled-back"  # asked by version, or back to an older one
        elif current and current.version == target and not force:
            out.outcome = "already-serving"
            return out
        with deploy_run(name, target, f"deploy-v{target}", trigger=trigger.value) as run:
            out.run_id = run.info.run_id
            if force or not (current and current.version == target):
                switch = lambda group: service.switch(settings, name, group)  # noqa: E731
                bring_up(settings, name, target, rows, out, switch)
            if version is not None:
                set_production(name, version)
            record(out, rollback=out.outcome == "rolled-back")
        return out


def check_no_candidate(settings: Settings, force: bool) -> None:
    """Refuse, unless forced, to replace Production while a canary or shadow is running."""
    state = read_state(settings)
    if state is not None and state.candidate is not None and not force:
        c = state.candidate
        raise DurationError(
            f"a {c.role} of version {c.version} is serving beside Production: `duration deploy "
            "--finish` or `--abort` it first, or give --force (which removes it)"
        )


@contextmanager
def deploy_run(name: str, version: str, run_name: str, **tags: str) -> Iterator[Any]:
    """One run in the deployments experiment; a refusal on the way marks it failed, with
    its reason, and the run ends FAILED."""
    with runs.active_run(
        experiment_id=experiments.experiment_id(DEPLOY_EXPERIMENT),
        run_name=run_name,
        tags={"model_name": name, "version": version, **tags, **runs.process_tags()},
    ) as run:
        try:
            yield run
        except DurationError as e:
            client().set_tag(run.info.run_id, "outcome", "failed")
            client().set_tag(run.info.run_id, "reason", str(e)[:500])
            raise


def start(settings: Settings, name: str, wait: float = 0.0) -> State:
    """Serve the Production version unless it already serves healthily (restores a crash)."""
    with deploy_lock(settings, wait):
        current = serving_now(settings, name)
        if current is not None:
            return current
        version = production_version(name)
        kept = read_state(settings)
        same = kept is not None and (kept.name, kept.version) == (name, version)
        if kept is not None and same and workers.up(kept.production):
            return service.switch(settings, name, kept.production)  # only the proxy was down
        with service.started(settings, name, version) as group:
            return service.switch(settings, name, group)


def stop(settings: Settings, wait: float = 0.0) -> list[str]:
    """Stop serving (never in the middle of a deploy)."""
    with deploy_lock(settings, wait):
        return service.stop(settings)
