"""The MLflow Projects entry points: declared right, run the installed command, and are
pinned like pyproject.toml."""

from __future__ import annotations

import re
import tomllib

import typer
import yaml

from duration.cli import app
from tests.helpers import ROOT


def _project() -> dict:
    return yaml.safe_load((ROOT / "MLproject").read_text())


def test_python_env_is_pinned_like_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / _project()["python_env"]).read_text())
    wanted = project["dependencies"] + project["optional-dependencies"]["spark"]
    assert env["dependencies"] == wanted
    assert env["python"] == "3.11"


def test_every_entry_point_runs_a_real_command_with_its_parameters():
    commands = {c.name for c in typer.main.get_command(app).commands.values()}
    points = _project()["entry_points"]
    assert {
        "main", "pipeline", "train", "tune", "register", "promote", "predict", "monitor",
        "cycle", "deploy",
    } <= set(points)  # fmt: skip
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
