"""Each default is written once: the Makefile's variables and the MLproject's parameters
are held equal to the CLI's own defaults (which come from the request dataclasses)."""

from __future__ import annotations

import re
from enum import Enum

import pytest
import typer
import yaml

from duration.cli import app
from duration.core.schema import COURSE, NEXT_MONTH
from duration.settings import Settings
from tests.helpers import ROOT

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]


SETTINGS = Settings().automate  # the defaults of the flags that are settings too
FROM_SETTINGS = {
    ("cycle", "--trials"): SETTINGS.trials,
    ("cycle", "--window"): SETTINGS.window,
    ("cycle", "--live"): SETTINGS.live,
    ("cycle", "--live-weight"): SETTINGS.live_weight,
}


def default(command: str, flag: str) -> str:
    """The CLI's default for `flag` of `command`, as text (a setting's, where the flag's
    own default is None: the environment then decides)."""
    for param in COMMANDS[command].params:
        if flag in getattr(param, "opts", ()):
            value = param.default
            if value is None and (command, flag) in FROM_SETTINGS:
                value = FROM_SETTINGS[(command, flag)]
            return str(value.value if isinstance(value, Enum) else value)
    raise KeyError(f"{command} has no {flag}")


def same(a: object, b: str) -> bool:
    """Equal as values: 30 and "30", 0.0 and "0.0"."""
    try:
        return float(a) == float(b)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(a) == b


MAKE = dict(re.findall(r"^(\w+)\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M))
MAKE_FLAGS = {  # Makefile variable -> (command, flag) it is passed to
    "COLOR": ("pipeline", "--color"),
    "TRAIN": ("pipeline", "--train"),
    "VAL": ("pipeline", "--val"),
    "TEST": ("pipeline", "--test"),
    "FEATURES": ("pipeline", "--features"),
    "TRIALS": ("pipeline", "--trials"),
    "BASELINES": ("pipeline", "--baselines"),
    "SEED": ("pipeline", "--seed"),
    "MONTH": ("monitor", "--month"),
    "RIDES": ("traffic", "--rides"),
    "RATE": ("traffic", "--rate"),
    "CONCURRENCY": ("traffic", "--concurrency"),
}


@pytest.mark.parametrize("var", sorted(MAKE_FLAGS))
def test_the_makefile_defaults_are_the_clis(var):
    command, flag = MAKE_FLAGS[var]
    assert same(MAKE[var], default(command, flag)), (var, MAKE[var], default(command, flag))


POINTS = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]


@pytest.mark.parametrize("point", sorted(POINTS))
def test_the_mlproject_defaults_are_the_clis(point):
    command = re.findall(r"duration (\w+)", POINTS[point]["command"])[-1]
    for name, param in POINTS[point]["parameters"].items():
        flag = "--" + name.replace("_", "-")
        if "default" not in param:  # required: the CLI has no default either
            assert default(command, flag) == "None", (point, name)
            continue
        assert same(param["default"], default(command, flag)), (point, name)


def test_the_course_months_are_every_commands_default():
    assert (default("pipeline", "--train"), default("pipeline", "--val")) == (
        COURSE.train,
        COURSE.val,
    )
    assert default("register", "--test") == default("pipeline", "--test") == COURSE.test
    assert default("download", "--month") == default("vectorize", "--train") == COURSE.train
    assert default("predict", "--month") == default("monitor", "--month") == NEXT_MONTH
