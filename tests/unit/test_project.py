"""The MLflow Projects entry points: declared right, run the installed command, and are
pinned like pyproject.toml."""

from __future__ import annotations

import re
import tomllib

import typer
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from duration.cli import app
from tests.helpers import ROOT


def _project() -> dict:
    return yaml.safe_load((ROOT / "MLproject").read_text())


LOCK = ROOT / "requirements.lock"


def _locked() -> dict[str, tuple[str, int]]:
    """The lock file's packages: name -> (version, how many hashes it lists)."""
    out: dict[str, tuple[str, int]] = {}
    name = ""
    for line in LOCK.read_text().splitlines():
        if found := re.match(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", line):
            name = canonicalize_name(found.group(1))
            out[name] = (found.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, hashes = out[name]
            out[name] = (version, hashes + 1)
    return out


def test_the_lock_satisfies_every_requirement_of_pyproject_with_hashes():
    """`make install` installs requirements.lock with --require-hashes: every package the
    project and its locked extras need is there, at a version pyproject.toml allows."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = re.search(r"^LOCKED\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert extras is not None
    wanted = [*project["dependencies"]]
    for extra in extras.group(1).split():
        wanted += project["optional-dependencies"][extra]
    locked = _locked()
    missing, wrong = [], []
    for raw in wanted:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        if name not in locked:
            missing.append(name)
        elif not req.specifier.contains(locked[name][0], prereleases=True):
            wrong.append(f"{req} (locked {locked[name][0]})")
    assert missing == [] and wrong == [], "run `make lock`"
    assert all(hashes for _, hashes in locked.values())


def test_the_mlflow_project_environment_is_the_lock():
    env = yaml.safe_load((ROOT / _project()["python_env"]).read_text())
    assert env["dependencies"] == [f"-r {LOCK.name}"]
    assert env["python"] == "3.11"


def test_every_entry_point_runs_a_real_command_with_its_parameters():
    commands = {c.name for c in typer.main.get_command(app).commands.values()}
    points = _project()["entry_points"]
    assert {
        "main",
        "pipeline",
        "train",
        "tune",
        "register",
        "promote",
        "predict",
        "monitor",
        "cycle",
        "deploy",
    } <= set(points)
    assert points["main"] == points["pipeline"]
    for name, point in points.items():
        command = point["command"]
        used = set(re.findall(r"\{(\w+)\}", command))
        assert used == set(point["parameters"]), name  # no parameter unused or undeclared
        assert "PYTHONPATH" not in command and "python -m" not in command, name
        called = re.findall(r"(?:^|&& )duration (\w+)", command)
        assert called and set(called) <= commands, (name, called)
        for param in point["parameters"].values():
            assert param["type"] in {"string", "float", "path", "uri"}


def test_pytest_silences_only_the_stage_deprecation_the_cli_silences():
    from duration.registry.uris import STAGE_DEPRECATION

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert config["filterwarnings"] == [f"ignore:.*{STAGE_DEPRECATION}:FutureWarning"]
