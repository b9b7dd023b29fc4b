"""The aliases that say what serves: `production`, and at most one candidate beside it,
`canary` (its share of clients in its version's `canary_weight` tag) or `shadow`. Moving
them is the one way to change what serves: the deployer (`duration.deployer`) follows them,
whoever moved them and wherever (a command, the cycle, the orchestrator, the MLflow UI).
Stages stay, and `set_production` moves the stage with its alias.

Whoever moves an alias owns it. A command that moves one and waits for serving to follow
(`deploy`, the pipeline, the cycle) moves it back when the deploy fails; a move made
elsewhere (the MLflow UI, another host) stays where it was put, and the deployer alerts."""

from __future__ import annotations

from dataclasses import dataclass

from duration.registry.uris import check_version, set_production
from duration.serving.state import CANDIDATES, Role
from duration.tracking.client import client

WEIGHT_TAG = "canary_weight"


@dataclass(frozen=True, kw_only=True)
class Wanted:
    """What the registry says should serve."""

    production: str | None
    candidate: Role | None = None  # canary or shadow
    candidate_version: str | None = None
    weight: int = 0  # a canary's share of clients, %; a shadow's 100


def wanted(name: str, default_weight: int = 20) -> Wanted:
    """The model's serving aliases (a canary with no weight tag takes `default_weight`;
    with both a canary and a shadow alias, the canary)."""
    aliases = client().get_registered_model(name).aliases
    production = aliases.get(Role.production.value)
    for role in CANDIDATES:
        if (version := aliases.get(role.value)) is not None:
            weight = 100
            if role is Role.canary:
                tag = client().get_model_version(name, version).tags.get(WEIGHT_TAG)
                weight = int(tag) if tag and tag.isdigit() else default_weight
            return Wanted(
                production=production, candidate=role, candidate_version=str(version), weight=weight
            )
    return Wanted(production=production)


def put_candidate(name: str, version: str, role: Role, weight: int = 0) -> None:
    """Make `version` the canary (`weight`% of clients) or the shadow; the other goes."""
    check_version(name, version)
    c = client()
    if role is Role.canary:
        c.set_model_version_tag(name, version, WEIGHT_TAG, str(weight))
    for other in CANDIDATES:
        if other is not role:
            clear(name, other)
    c.set_registered_model_alias(name, role.value, version)


def clear(name: str, role: Role | None = None) -> None:
    """Take the `role` alias off (both candidates' when None); absent is fine."""
    c = client()
    aliases = c.get_registered_model(name).aliases
    for r in [role] if role is not None else list(CANDIDATES):
        if r.value in aliases:
            c.delete_registered_model_alias(name, r.value)


def restore(name: str, before: Wanted) -> None:
    """Put the serving aliases back as `before` had them (after a move whose deploy failed:
    its mover takes it back)."""
    if before.production is not None:
        set_production(name, before.production)
    if before.candidate is None or before.candidate_version is None:
        clear(name)
    else:
        put_candidate(name, before.candidate_version, before.candidate, before.weight)
