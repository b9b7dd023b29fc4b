"""A version's reference profile, kept as artifacts of its run (`reference/`): built from
its training month when the version is registered, read back by monitoring."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from duration.data import prepare, reference
from duration.data.reference import Profile
from duration.errors import DurationError
from duration.registry.evaluation import predict_frame
from duration.registry.uris import check_version, load
from duration.settings import Settings
from duration.tracking.client import client

ARTIFACTS = "reference"  # the artifact folder on the version's run


def save(profile: Profile, run_id: str) -> None:
    """Log the profile as `reference/profile.parquet` and `reference/profile.json` of a run."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        profile.frame.to_parquet(folder / "profile.parquet", index=False)
        (folder / "profile.json").write_text(json.dumps(profile.meta, indent=1))
        client().log_artifacts(run_id, tmp, ARTIFACTS)


def exists(run_id: str) -> bool:
    """True when the run has a profile logged."""
    files = client().list_artifacts(run_id, ARTIFACTS)
    return any(f.path == f"{ARTIFACTS}/profile.json" for f in files)


def load_profile(run_id: str) -> Profile | None:
    """The profile logged on a run, or None if it has none."""
    if not exists(run_id):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(client().download_artifacts(run_id, ARTIFACTS, tmp))
        frame = pd.read_parquet(folder / "profile.parquet")
        meta = json.loads((folder / "profile.json").read_text())
    return Profile(frame=frame, meta=meta)


def build(settings: Settings, name: str, version: str) -> Profile:
    """Build a version's reference profile from its training month and log it on its run."""
    v = check_version(name, version)
    color, month = v.tags.get("color"), v.tags.get("train_month")
    if not color or not month or not v.run_id:
        raise DurationError(
            f"{name} v{version} has no reference profile, and no run or color and train_month "
            "tags to rebuild one from: register a new version with `duration register`"
        )
    rides = prepare.load_processed(settings, color, month)
    sampled = reference.sample(rides)
    pred = predict_frame(load(f"models:/{name}/{version}"), sampled, color)
    about = {"color": color, "train_month": month}  # of the run: versions may share it
    profile = reference.build(rides, sampled, pred, about)
    save(profile, v.run_id)
    return profile


def of_version(settings: Settings, mv: Any) -> Profile:
    """The version's reference profile; versions registered before profiles get one now."""
    found = load_profile(mv.run_id) if mv.run_id else None
    return found or build(settings, mv.name, mv.version)
