"""Register the best searched model, gate Staging -> Production, and resolve registry URIs.

Stages are deprecated in MLflow 3 but still work; every stage move also sets the lowercase
alias of the same name, so `models:/NAME/Production` and `models:/NAME@production` agree.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from duration import data, files, reference, tracking
from duration.config import (
    EVAL_EXPERIMENT,
    MODEL_NAME,
    PROMOTION_EXPERIMENT,
    SEARCH_EXPERIMENT,
    Settings,
)
from duration.errors import DurationError

STAGES = ("Staging", "Production", "Archived")


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def latest_search():
    """The most recent search's parent run, or a one-line error if none ran."""
    import mlflow

    exp = mlflow.get_experiment_by_name(SEARCH_EXPERIMENT)
    runs = []
    if exp is not None:
        runs = _client().search_runs(
            [exp.experiment_id],
            filter_string="tags.best_run_id LIKE '%'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    if not runs:
        raise DurationError(
            "no hyperparameter search has run on this tracking server: "
            "run `duration tune` (or `make pipeline`) first"
        )
    return runs[0]


def top_trials(parent, top_n: int) -> list:
    """The search's best `top_n` trials by val_rmse that logged a model."""
    return _client().search_runs(
        [parent.info.experiment_id],
        filter_string=(
            f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
            "and tags.model_uri LIKE 'models:/%' and attributes.status = 'FINISHED'"
        ),
        order_by=["metrics.val_rmse ASC"],
        max_results=top_n,
    )


def predict_frame(model, rides: pd.DataFrame, color: str) -> np.ndarray:
    """Predict durations for prepared rides, sent to the model as raw TLC records (only the
    columns its signature reads: MLflow warns about each other one)."""
    records = data.raw_records(rides.drop(columns=["duration", "dropoff_datetime"]), color)
    schema = model.metadata.get_input_schema()
    if schema is not None and schema.has_input_names():
        missing = [c for c in schema.required_input_names() if c not in records.columns]
        if missing:
            raise DurationError(
                f"the input lacks columns the model expects: {missing}; "
                "send raw TLC ride records with those columns"
            )
        names = set(schema.input_names())
        records = records[[c for c in records.columns if c in names]]
    ours = _duration_model(model)
    if ours is not None:
        # MLflow checks the optional columns (type Any) value by value: about 1 s per 70k
        # rides. The model normalises its input itself, as it does behind a scoring server.
        return ours.predict(None, records)
    return model.predict(records)


def _duration_model(model):
    """The project's own model behind a loaded pyfunc, or None for any other model."""
    from mlflow.exceptions import MlflowException

    from duration.model import DurationModel

    try:
        impl = model.unwrap_python_model()
    except (MlflowException, AttributeError):
        return None
    return impl if isinstance(impl, DurationModel) else None


def score(model_uri: str, rides: pd.DataFrame, color: str) -> float:
    """RMSE of a logged or registered model on prepared rides."""
    pred = predict_frame(load(model_uri), rides, color)
    return tracking.scores(rides["duration"].to_numpy(), pred)["rmse"]


# Per process: the models loaded last, by the logged model behind them (see `load`).
_LOADED: OrderedDict[str, object] = OrderedDict()
LOADED_MAX = 3


def load(model_uri: str):
    """Load a pyfunc model, turning unknown names, aliases and stages into one line.

    A logged model never changes, so one this process loaded lately is reused: `register`,
    its reference profile and `promote` score the same model, and monitoring loads the
    Production version once per month. A registry URI is resolved to the version's source
    on every call, so a stage or alias that moved loads the model it now points at.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    check_uri(model_uri)
    try:
        key = _source(model_uri)
        if key not in _LOADED:
            _LOADED[key] = mlflow.pyfunc.load_model(model_uri)
            while len(_LOADED) > LOADED_MAX:
                _LOADED.popitem(last=False)
        _LOADED.move_to_end(key)
        return _LOADED[key]
    except MlflowException as e:
        raise DurationError(f"cannot load {model_uri}: {_first(e)}") from e


def _source(model_uri: str) -> str:
    """The logged model behind a URI: a registry URI's version source, else the URI itself."""
    name, version = resolve_version(model_uri)
    if not version:
        return model_uri
    return _client().get_model_version(name, version).source


def _first(e: Exception) -> str:
    return str(getattr(e, "message", e)).splitlines()[0][:240]


_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<stage>[^/]+)|@(?P<alias>.+))$")


def check_uri(model_uri: str) -> None:
    """Reject unknown registered names, stages and aliases with a clear line."""
    m = _URI.match(model_uri)
    if not m or m["name"].startswith("m-"):
        return
    client = _client()
    name = m["name"]
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        raise DurationError(
            f"no registered model named {name!r}: check the name, or run `duration register`"
        )
    stage, alias = m["stage"], m["alias"]
    if stage and not stage.isdigit():
        if stage.capitalize() not in STAGES and stage.lower() != "latest":
            raise DurationError(f"{stage!r} is not a stage: use Staging, Production or Archived")
        if stage.lower() != "latest" and not client.get_latest_versions(name, [stage.capitalize()]):
            raise DurationError(f"{name} has no version in stage {stage.capitalize()}")
    if alias:
        aliases = client.get_registered_model(name).aliases
        if alias not in aliases:
            raise DurationError(
                f"{name} has no alias @{alias} (it has: {sorted(aliases) or 'none'})"
            )


def resolve_version(model_uri: str) -> tuple[str, str]:
    """(name, version) behind a registry URI; ('', '') for a logged model URI."""
    m = _URI.match(model_uri)
    if not m or m["name"].startswith("m-"):
        return "", ""
    client, name = _client(), m["name"]
    if m["alias"]:
        return name, client.get_model_version_by_alias(name, m["alias"]).version
    stage = m["stage"]
    if stage.isdigit():
        return name, stage
    versions = client.get_latest_versions(name, None if stage == "latest" else [stage.capitalize()])
    return name, max(versions, key=lambda v: int(v.version)).version if versions else ""


def version_in(name: str, stage: str):
    """The newest version of `name` in `stage`, or None."""
    versions = _client().get_latest_versions(name, [stage])
    return max(versions, key=lambda v: int(v.version)) if versions else None


def move(name: str, version: str, stage: str) -> None:
    """Transition a version to `stage` and set the same-named lowercase alias where it applies."""
    client = _client()
    client.transition_model_version_stage(name, version, stage)
    if stage in ("Staging", "Production"):
        client.set_registered_model_alias(name, stage.lower(), version)


@dataclass
class Registered:
    """The outcome of `register`."""

    model_name: str
    model_version: str
    stage: str
    run_id: str
    val_rmse: float
    test_rmse: float | None
    test_month: str | None
    candidates: list


def search_run(parent_run_id: str | None):
    """The search's parent run by id, or the latest search's when no id is given."""
    if parent_run_id is None:
        return latest_search()
    run = _client().get_run(parent_run_id)
    if "best_run_id" not in run.data.tags:
        raise DurationError(
            f"run {parent_run_id} is not a finished hyperparameter search: give the parent run "
            "of a `duration tune`"
        )
    return run


def _evaluate(settings: Settings, parent, trials: list, test_month: str, test_ds) -> list[dict]:
    """Score each trial's model on the test month, for information (one eval run each)."""
    import mlflow

    color = parent.data.tags["color"]
    rides = data.load_processed(settings, color, test_month)
    candidates = []
    for run in trials:
        uri = run.data.tags["model_uri"]
        rmse = score(uri, rides, color)
        with tracking.active_run(
            experiment_id=tracking.experiment_id(EVAL_EXPERIMENT),
            run_name=f"eval-{run.info.run_name}",
            tags={
                "source_run_id": run.info.run_id,
                "search_run_id": parent.info.run_id,
                "model_uri": uri,
                "test_month": test_month,
                **tracking.process_tags(),
            },
        ):
            tracking.log_dataset(mlflow.active_run().info.run_id, test_ds, "test")
            mlflow.log_metrics({"test_rmse": rmse, "val_rmse": run.data.metrics["val_rmse"]})
        candidates.append(
            {
                "run_id": run.info.run_id,
                "model_uri": uri,
                "val_rmse": run.data.metrics["val_rmse"],
                "test_rmse": rmse,
            }
        )
    return candidates


def register(
    settings: Settings,
    test_month: str | None,
    name: str = MODEL_NAME,
    top_n: int = 5,
    parent_run_id: str | None = None,
) -> Registered:
    """Register the search's best trial (by validation RMSE) in Staging.

    Its top-N trials are scored on the test month for information (the course's table);
    with no test month (the cycle, whose gate month must stay unseen) none is scored.
    The search is `parent_run_id`'s, or the latest on the server when it is None.
    """
    parent = search_run(parent_run_id)
    trials = top_trials(parent, top_n)
    if not trials:
        raise DurationError(
            f"search {parent.info.run_id} has no finished trial with a model: run `duration tune`"
        )
    tags = parent.data.tags
    if test_month is None:
        test_ds = None
        candidates = [
            {"run_id": r.info.run_id, "model_uri": r.data.tags["model_uri"],
             "val_rmse": r.data.metrics["val_rmse"], "test_rmse": None}
            for r in trials
        ]  # fmt: skip
    else:
        test_ds = tracking.dataset(settings, tags["color"], data.check_month(test_month, "--test"))
        candidates = _evaluate(settings, parent, trials, test_month, test_ds)
    # Selected by validation RMSE: the test month plays no part in the choice, so the chosen
    # model's test RMSE (and the promotion gate on that month) stays honest.
    best = min(candidates, key=lambda c: c["val_rmse"])
    best_run = _client().get_run(best["run_id"])
    digests = {
        d.dataset.name: d.dataset.digest
        for d in _client().get_run(parent.info.run_id).inputs.dataset_inputs
    }
    test_digest = test_ds.digest if test_ds is not None else None
    version = _register_version(
        settings, name, best, best_run, tags, test_month, test_digest, digests
    )
    return Registered(
        name,
        version,
        "Staging",
        best["run_id"],
        best["val_rmse"],
        best["test_rmse"],
        test_month,
        candidates,
    )


def _register_version(settings, name, best, run, tags, test_month, test_digest, digests) -> str:
    """Create the version, describe and tag it, save its reference profile, and move it to
    Staging; undo on failure."""
    import mlflow

    client = _client()
    previous = (
        version_in(name, "Staging")
        if client.search_registered_models(filter_string=f"name = '{name}'")
        else None
    )
    mv = mlflow.register_model(best["model_uri"], name)
    try:
        client.update_model_version(
            name,
            mv.version,
            description=(
                f"{run.data.tags.get('model')} on {tags['color']} taxi rides, "
                f"{tags['feature_set']} features; trained on {tags['train_month']}, "
                f"validated on {tags['val_month']} (val RMSE {best['val_rmse']:.4f} min)"
                + (
                    f", tested on {test_month} (test RMSE {best['test_rmse']:.4f} min)."
                    if test_month
                    else "."
                )
            ),
        )
        tested = (
            {"test_rmse": f"{best['test_rmse']:.6f}", "test_month": test_month}
            if (test_month)
            else {}
        )
        version_tags = {
            "val_rmse": f"{best['val_rmse']:.6f}",
            **tested,
            "feature_set": tags["feature_set"],
            "color": tags["color"],
            "train_month": tags["train_month"],
            "val_month": tags["val_month"],
            "git_commit": run.data.tags.get("git_commit", "unknown"),
            "source_run_id": best["run_id"],
            "data_digests": ", ".join(f"{k}:{v}" for k, v in sorted(digests.items()))
            + (f", test:{test_digest}" if test_digest else ""),
        }
        for k, v in version_tags.items():
            client.set_model_version_tag(name, mv.version, k, v)
        if not reference.exists(run.info.run_id):  # a run registered before has its own
            save_reference(settings, name, mv.version)
        move(name, mv.version, "Staging")
        if previous is not None and previous.version != mv.version:
            client.transition_model_version_stage(name, previous.version, "Archived")
    except Exception:
        client.delete_model_version(name, mv.version)
        if previous is not None:
            move(name, previous.version, "Staging")
        raise
    return mv.version


def save_reference(settings: Settings, name: str, version: str) -> reference.Profile:
    """Build a version's reference profile from its training month and log it on its run."""
    v = check_version(name, version)
    color, month = v.tags.get("color"), v.tags.get("train_month")
    if not color or not month or not v.run_id:
        raise DurationError(
            f"{name} v{version} has no reference profile, and no run or color and train_month "
            "tags to rebuild one from: register a new version with `duration register`"
        )
    rides = data.load_processed(settings, color, month)
    sampled = reference.sample(rides)
    pred = predict_frame(load(f"models:/{name}/{version}"), sampled, color)
    about = {"color": color, "train_month": month}  # of the run: versions may share it
    profile = reference.build(rides, sampled, pred, about)
    reference.save(profile, v.run_id)
    return profile


@dataclass
class Decision:
    """The outcome of `promote`."""

    model_name: str
    challenger: str
    champion: str
    month: str
    challenger_rmse: float
    champion_rmse: float | None
    promoted: bool
    reason: str
    production: str


def _gate(ch: str, cp: str | None, ch_rmse: float, cp_rmse: float | None, margin: float):
    """(promoted, reason): the challenger wins if it beats the champion by more than `margin`."""
    if cp is None:
        return True, f"v{ch} is the first Production version"
    if cp_rmse - ch_rmse > margin or (margin == 0 and ch_rmse < cp_rmse):
        return True, (
            f"challenger v{ch} RMSE {ch_rmse:.4f} beats champion v{cp} {cp_rmse:.4f} "
            f"by more than {margin}"
        )
    return False, (
        f"challenger v{ch} RMSE {ch_rmse:.4f} does not beat champion v{cp} {cp_rmse:.4f} "
        f"by more than {margin}; v{cp} stays in Production"
    )


def _record(d: Decision, min_improvement: float) -> None:
    """Log the decision as a run, tag both versions, and move the stages if promoted."""
    import mlflow

    client, name = _client(), d.model_name
    with tracking.active_run(
        experiment_id=tracking.experiment_id(PROMOTION_EXPERIMENT),
        run_name=f"promote-v{d.challenger}",
        tags={
            "model_name": name,
            "challenger_version": d.challenger,
            "champion_version": d.champion,
            "month": d.month,
            **tracking.process_tags(),
        },
    ):
        metrics = {"challenger_rmse": d.challenger_rmse}
        if d.champion_rmse is not None:
            metrics["champion_rmse"] = d.champion_rmse
        mlflow.log_metrics(metrics)
        mlflow.log_params({"min_improvement": min_improvement, "promoted": d.promoted})
        mlflow.set_tag("reason", d.reason)
        tag = client.set_model_version_tag
        tag(name, d.challenger, f"rmse_{d.month}", f"{d.challenger_rmse:.6f}")
        tag(name, d.challenger, "promotion_decision", "promoted" if d.promoted else "rejected")
        if d.champion:
            tag(name, d.champion, f"rmse_{d.month}", f"{d.champion_rmse:.6f}")
        if d.promoted:
            _swap(name, d.challenger, d.champion or None)


LEASE_TAG = "promote_lease"


def _lease(name: str) -> dict | None:
    """The promote lease recorded on the registered model, if any (unreadable counts as none)."""
    raw = _client().get_registered_model(name).tags.get(LEASE_TAG)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _lease_free(lease: dict | None, me: str) -> bool:
    """True when nobody else holds `lease`: none, ours, expired, or its process on this host
    is gone (a promote killed with SIGKILL leaves its lease behind)."""
    if lease is None or lease.get("owner") == me or lease.get("until", 0) < time.time():
        return True
    since = int(lease.get("since", 0) * 1000)
    return tracking.process_gone(lease.get("host", ""), str(lease.get("pid", "")), since)


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
    import uuid

    from mlflow.exceptions import MlflowException

    client, host = _client(), socket.gethostname()
    me = f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline, waited = time.monotonic() + wait, False
    while True:
        lease = _lease(name)
        if _lease_free(lease, me):
            now = time.time()
            mine = {"owner": me, "host": host, "pid": os.getpid(), "since": now, "until": now + ttl}
            try:
                client.set_registered_model_tag(name, LEASE_TAG, json.dumps(mine))
            except MlflowException as e:  # two first writes at once: the other's insert won
                if not tracking.lost_insert(e):
                    raise
            else:
                time.sleep(settle)
                lease = _lease(name)
                if lease is not None and lease.get("owner") == me:
                    break
        waited = True
        if time.monotonic() > deadline:
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
            client.delete_registered_model_tag(name, LEASE_TAG)


@contextmanager
def promote_lock(settings: Settings, name: str, wait: float = 600.0) -> Iterator[bool]:
    """One promote of a model per tracking server at a time: a lock file for promotes on this
    host, then the registry's lease for promotes on other hosts; yields True when it had to
    wait for another."""
    key = hashlib.sha256(f"{settings.tracking_uri.rstrip('/')}|{name}".encode()).hexdigest()
    busy = f"another promote of {name} has run for over {wait:.0f} s: try again later"
    lock = settings.lock_dir / f"promote-{key[:16]}.lock"
    with files.exclusive(lock, wait, busy) as here, registry_lease(name, wait) as elsewhere:
        yield here or elsewhere


def promote(
    settings: Settings, name: str = MODEL_NAME, month: str | None = None, min_improvement=0.0
) -> Decision:
    """Promote Staging to Production only if it beats Production by `min_improvement` RMSE.

    Two promotes at once, on one host or several, run one after the other: the second
    decides on what the first left, and says it lost when it promotes nothing.
    """
    if not _client().search_registered_models(filter_string=f"name = '{name}'"):
        raise DurationError(f"no registered model named {name!r}: run `duration register` first")
    with promote_lock(settings, name) as waited:
        d = _promote(settings, name, month, min_improvement)
    if waited and not d.promoted:
        d.reason = f"lost to another promote of {name} that ran at the same time: {d.reason}"
    return d


def _promote(settings: Settings, name: str, month: str | None, min_improvement) -> Decision:
    """Score Staging and Production on `month`, record the decision and move the stages."""
    challenger = version_in(name, "Staging")
    champion = version_in(name, "Production")
    if challenger is None:
        if champion is None:
            raise DurationError(f"{name} has no version in Staging: run `duration register` first")
        reason = (
            f"nothing to promote: no Staging version; version {champion.version} "
            "stays in Production"
        )
        v = champion.version
        return Decision(name, "", v, month or "", math.nan, None, False, reason, v)
    month = data.check_month(month or challenger.tags.get("test_month", ""), "--month")
    color = challenger.tags.get("color", "green")
    rides = data.load_processed(settings, color, month)
    ch, cp = challenger.version, champion.version if champion else None
    ch_rmse = score(f"models:/{name}/{ch}", rides, color)
    cp_rmse = score(f"models:/{name}/{cp}", rides, color) if cp else None
    promoted, reason = _gate(ch, cp, ch_rmse, cp_rmse, min_improvement)
    production = ch if promoted else cp
    d = Decision(name, ch, cp or "", month, ch_rmse, cp_rmse, promoted, reason, production)
    _record(d, min_improvement)
    return d


def _swap(name: str, new: str, old: str | None) -> None:
    """Challenger -> Production, champion -> Archived (alias removed); undone on failure."""
    try:
        set_production(name, new)
    except Exception:
        move(name, new, "Staging")
        if old is not None:
            move(name, old, "Production")
        raise


def check_version(name: str, version: str):
    """The model version, or a one-line error naming what exists."""
    try:
        return _client().get_model_version(name, version)
    except Exception as e:  # noqa: BLE001 - MLflow raises its own error for an unknown version
        raise DurationError(f"{name} has no version {version}: {_first(e)}") from e


def set_production(name: str, version: str) -> str | None:
    """Put `version` in Production (stage and alias) and archive the one there; return the
    version it replaced (None if none). The undo for a bad promotion."""
    check_version(name, version)
    client = _client()
    old = version_in(name, "Production")
    old_version = old.version if old is not None else None
    if old_version == version:
        client.set_registered_model_alias(name, "production", version)
        return old_version
    aliases = client.get_registered_model(name).aliases
    if aliases.get("staging") == version:
        client.delete_registered_model_alias(name, "staging")
    move(name, version, "Production")
    if old_version is not None:
        client.transition_model_version_stage(name, old_version, "Archived")
    return old_version
