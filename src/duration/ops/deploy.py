"""Deploy a registered version safely: start it beside the serving one, smoke-test it over
HTTP against in-process predictions, then switch the proxy to it. Roll back with a version.

The registry is not a deployment tool: this step is what moves a Production version into
service. Each deploy is one run in the `...-deployments` experiment; one deploy at a time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import requests

from duration.core.records import raw_records
from duration.data import prepare
from duration.errors import DurationError
from duration.infra import serving
from duration.infra.files import exclusive
from duration.registry.uris import check_version, exists, load, set_production
from duration.settings import Settings
from duration.tracking import experiments, runs
from duration.tracking.client import client
from duration.tracking.names import DEPLOY_EXPERIMENT

SMOKE_TOLERANCE = 1e-4  # minutes: HTTP answers must match in-process predictions this closely
SMOKE_ROWS = 200


@dataclass(kw_only=True)
class Deployment:
    """The outcome of `deploy`."""

    model_name: str
    version: str
    previous_version: str | None
    outcome: str  # deployed, rolled-back, already-serving
    url: str
    timings: dict = field(default_factory=dict)  # start_s, smoke_s, switch_s
    smoke: dict = field(default_factory=dict)  # rows, month, max_abs_diff
    run_id: str | None = None


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
    if not exists(name):
        raise DurationError(f"no registered model named {name!r}: run `make pipeline` first")
    version = client().get_registered_model(name).aliases.get("production")
    if version is None:
        raise DurationError(
            f"{name} has no Production version: promote one first (`duration promote`)"
        )
    return version


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


def smoke_test(url: str, name: str, version: str, records: pd.DataFrame) -> dict:
    """Send `records` to `url`/invocations and compare with the registry's model in-process."""
    payload = {"dataframe_split": json.loads(records.to_json(orient="split", date_format="iso"))}
    t0 = time.perf_counter()
    try:
        r = requests.post(  # a smoke test is not a served prediction: not in the log
            f"{url}/invocations", json=payload, timeout=60, headers={"X-Duration-Smoke": "1"}
        )
    except requests.RequestException as e:
        raise DurationError(f"version {version} did not answer the smoke test: {e}") from e
    if r.status_code != 200:
        raise DurationError(
            f"version {version} answered the smoke test with HTTP {r.status_code}: {r.text[:160]}"
        )
    served = np.asarray(r.json()["predictions"], dtype=np.float64).ravel()
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
    return {"rows": len(records), "max_abs_diff": diff, "http_s": round(http_s, 3)}


def _serving(settings: Settings, name: str) -> serving.State | None:
    """The healthy serving state for `name`, or None."""
    st = serving.status(settings)
    return serving.read_state(settings) if st["healthy"] and st["model_name"] == name else None


def _bring_up(settings: Settings, name: str, version: str, rows: int, out: Deployment) -> None:
    """Start `version`, smoke-test it, switch to it; the old one serves until the switch."""
    color = check_version(name, version).tags.get("color", "green")
    records, month = smoke_rides(settings, color, rows)
    t0 = time.perf_counter()
    with serving.started(settings, name, version) as backend:
        out.timings["start_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        out.smoke = {"month": month, **smoke_test(backend.url, name, version, records)}
        out.timings["smoke_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        serving.switch(settings, name, backend)
        out.timings["switch_s"] = round(time.perf_counter() - t0, 3)


def _record(out: Deployment, rollback: bool) -> None:
    """The deploy's params, timings and outcome on its run; the version's deployed_at tag."""
    import mlflow  # deferred: MLflow takes seconds to import

    mlflow.log_params({"version": out.version, "previous_version": out.previous_version,
                       "rollback": rollback, "smoke_rows": out.smoke.get("rows")})  # fmt: skip
    metrics = {**out.timings}
    if "max_abs_diff" in out.smoke:
        metrics["smoke_max_abs_diff"] = out.smoke["max_abs_diff"]
    mlflow.log_metrics(metrics)
    mlflow.set_tags({"outcome": out.outcome, "smoke_month": out.smoke.get("month", "")})
    now = datetime.now(UTC).isoformat(timespec="seconds")
    client().set_model_version_tag(out.model_name, out.version, "deployed_at", now)


def deploy(
    settings: Settings,
    name: str,
    version: str | None = None,
    rows: int = SMOKE_ROWS,
    force: bool = False,
    wait: float = 0.0,
) -> Deployment:
    """Serve `version` (default: Production) safely; with a version, also make it Production."""
    with deploy_lock(settings, wait):
        target = version or production_version(name)
        current = _serving(settings, name)
        previous = current.version if current else None
        out = Deployment(
            model_name=name, version=target, previous_version=previous, outcome="deployed",
            url=settings.serve.url,
        )  # fmt: skip
        if version is not None:
            out.outcome = "rolled-back"
        elif current and current.version == target and not force:
            out.outcome = "already-serving"
            return out
        with runs.active_run(
            experiment_id=experiments.experiment_id(DEPLOY_EXPERIMENT),
            run_name=f"deploy-v{target}",
            tags={"model_name": name, "version": target, **runs.process_tags()},
        ) as run:
            out.run_id = run.info.run_id
            if force or not (current and current.version == target):
                try:
                    _bring_up(settings, name, target, rows, out)
                except DurationError as e:
                    client().set_tag(run.info.run_id, "outcome", "failed")
                    client().set_tag(run.info.run_id, "reason", str(e)[:500])
                    raise
            if version is not None:
                set_production(name, version)
            _record(out, version is not None)
        return out


def start(settings: Settings, name: str, wait: float = 0.0) -> serving.State:
    """Serve the Production version unless it already serves healthily (restores a crash)."""
    with deploy_lock(settings, wait):
        current = _serving(settings, name)
        if current is not None:
            return current
        version = production_version(name)
        kept = serving.read_state(settings)
        same = kept is not None and (kept.name, kept.version) == (name, version)
        if kept is not None and same and serving.up(kept.backend):
            return serving.switch(settings, name, kept.backend)  # only the proxy was down
        with serving.started(settings, name, version) as backend:
            return serving.switch(settings, name, backend)


def stop(settings: Settings, wait: float = 0.0) -> list[str]:
    """Stop serving (never in the middle of a deploy)."""
    with deploy_lock(settings, wait):
        return serving.stop(settings)
