"""The package's shape: one job per module, short functions, no side effects on import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "duration"
MAX_LINES = 60


def _imports(path: Path) -> set[str]:
    """The duration modules a file imports (`from duration import x` and `duration.x`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "duration":
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("duration."):
            found.add(node.module.split(".")[1])
    return found


@pytest.mark.parametrize("module", ["registry", "predict", "tune", "model", "tracking"])
def test_no_stage_reaches_into_train_for_helpers(module):
    """MLflow helpers live in `tracking`, estimators in `estimators`: `train` only trains."""
    assert "train" not in _imports(SRC / f"{module}.py")


def test_the_tracking_helpers_do_not_depend_on_the_stages():
    assert _imports(SRC / "tracking.py") <= {"config", "data", "errors", "matrices", "server"}


def test_no_function_is_longer_than_sixty_lines():
    long = []
    for path in sorted(SRC.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert long == []


def test_importing_the_package_leaves_the_plotting_backend_alone():
    code = (
        "import matplotlib; matplotlib.use('svg'); "
        "import duration.train, duration.tune, duration.plots, duration.pipeline, duration.cli; "
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"


def test_figures_draw_without_pyplot():
    import numpy as np

    from duration import plots

    y = np.linspace(1, 60, 200)
    fig = plots.predicted_vs_actual(y, y + 1)
    assert fig.canvas.get_supported_filetypes()["png"]
    assert "matplotlib.pyplot" not in sys.modules or fig.number is None
