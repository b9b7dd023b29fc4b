"""Registry URIs: check and resolve `models:/NAME/Stage`, `models:/NAME@alias` and
`models:/NAME/VERSION`, move stages with their same-named aliases, and load models with a
small per-process cache.

Stages are deprecated in MLflow 3 but still work; every stage move also sets the lowercase
alias of the same name, so `models:/NAME/Production` and `models:/NAME@production` agree.
"""

from __future__ import annotations

import re
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from duration.errors import DurationError
from duration.tracking.client import client

STAGES = ("Staging", "Production", "Archived")
# What MLflow says on every call of its stage API. Stages are kept because users learn them
# (and every move sets the same-named alias), so this notice, and only it, is silenced.
STAGE_DEPRECATION = "Model registry stages will be removed in a future major release"


def quiet_stage_notice() -> None:
    """Hide only MLflow's notice that stages are deprecated (the project keeps them on
    purpose, each with its alias): every other warning shows."""
    warnings.filterwarnings("ignore", message=f".*{STAGE_DEPRECATION}", category=FutureWarning)


_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<stage>[^/]+)|@(?P<alias>.+))$")


def first_line(e: Exception) -> str:
    """An MLflow error's message, on one line."""
    return str(getattr(e, "message", e)).splitlines()[0][:240]


def exists(name: str) -> bool:
    """True when a registered model of that name exists."""
    return bool(client().search_registered_models(filter_string=f"name = '{name}'"))


def require(name: str, hint: str = "run `make pipeline` first") -> None:
    """A one-line error unless a registered model `name` exists."""
    if not exists(name):
        raise DurationError(f"no registered model named {name!r}: {hint}")


def check_uri(model_uri: str) -> None:
    """Reject unknown registered names, stages and aliases with a clear line."""
    m = _URI.match(model_uri)
    if not m or m["name"].startswith("m-"):
        return
    c, name = client(), m["name"]
    require(name, "check the name, or run `duration register`")
    stage, alias = m["stage"], m["alias"]
    if stage and not stage.isdigit():
        if stage.capitalize() not in STAGES and stage.lower() != "latest":
            raise DurationError(f"{stage!r} is not a stage: use Staging, Production or Archived")
        if stage.lower() != "latest" and not c.get_latest_versions(name, [stage.capitalize()]):
            raise DurationError(f"{name} has no version in stage {stage.capitalize()}")
    if alias:
        aliases = c.get_registered_model(name).aliases
        if alias not in aliases:
            raise DurationError(
                f"{name} has no alias @{alias} (it has: {sorted(aliases) or 'none'})"
            )


def resolve_version(model_uri: str) -> tuple[str, str]:
    """(name, version) behind a registry URI; ('', '') for a logged model URI."""
    m = _URI.match(model_uri)
    if not m or m["name"].startswith("m-"):
        return "", ""
    c, name = client(), m["name"]
    if m["alias"]:
        return name, str(c.get_model_version_by_alias(name, m["alias"]).version)
    stage = m["stage"]
    if stage.isdigit():
        return name, stage
    versions = c.get_latest_versions(name, None if stage == "latest" else [stage.capitalize()])
    return name, max(versions, key=lambda v: int(v.version)).version if versions else ""


def version_in(name: str, stage: str) -> Any:
    """The newest version of `name` in `stage`, or None."""
    versions = client().get_latest_versions(name, [stage])
    return max(versions, key=lambda v: int(v.version)) if versions else None


def check_version(name: str, version: str) -> Any:
    """The model version, or a one-line error naming what exists."""
    try:
        return client().get_model_version(name, version)
    except Exception as e:  # noqa: BLE001 - MLflow raises its own error for an unknown version
        raise DurationError(f"{name} has no version {version}: {first_line(e)}") from e


def move(name: str, version: str, stage: str) -> None:
    """Transition a version to `stage` and set the same-named lowercase alias where it applies."""
    c = client()
    c.transition_model_version_stage(name, version, stage)
    if stage in ("Staging", "Production"):
        c.set_registered_model_alias(name, stage.lower(), version)


def set_production(name: str, version: str) -> str | None:
    """Put `version` in Production (stage and alias) and archive the one there; return the
    version it replaced (None if none). The undo for a bad promotion."""
    check_version(name, version)
    c = client()
    old = version_in(name, "Production")
    old_version = old.version if old is not None else None
    if old_version == version:
        c.set_registered_model_alias(name, "production", version)
        return old_version
    aliases = c.get_registered_model(name).aliases
    if aliases.get("staging") == version:
        c.delete_registered_model_alias(name, "staging")
    move(name, version, "Production")
    if old_version is not None:
        c.transition_model_version_stage(name, old_version, "Archived")
    return old_version


class LoadCache:
    """The models this process loaded last, by the logged model behind their URI.

    A logged model never changes, so one loaded lately is reused: `register`, its reference
    profile and `promote` score the same model, and monitoring loads Production once per
    month. A registry URI is resolved to its version's source on every call, so a stage or
    alias that moved loads the model it now points at.
    """

    def __init__(self, maxsize: int = 3) -> None:
        self.maxsize = maxsize
        self.models: OrderedDict[str, Any] = OrderedDict()

    def get(self, key: str, load: Callable[[], Any]) -> Any:
        """The model under `key`, loaded with `load()` if it is not kept."""
        if key not in self.models:
            self.models[key] = load()
            while len(self.models) > self.maxsize:
                self.models.popitem(last=False)
        self.models.move_to_end(key)
        return self.models[key]


CACHE = LoadCache()


def source(model_uri: str) -> str:
    """The logged model behind a URI: a registry URI's version source, else the URI itself."""
    name, version = resolve_version(model_uri)
    if not version:
        return model_uri
    return str(client().get_model_version(name, version).source)


def load(model_uri: str) -> Any:
    """Load a pyfunc model (see `LoadCache`), turning unknown names, aliases and stages into
    one line."""
    import mlflow  # deferred: MLflow takes seconds to import
    from mlflow.exceptions import MlflowException

    check_uri(model_uri)
    try:
        return CACHE.get(source(model_uri), lambda: mlflow.pyfunc.load_model(model_uri))
    except MlflowException as e:
        raise DurationError(f"cannot load {model_uri}: {first_line(e)}") from e
