"""The package's shape: one job per module, short functions, no side effects on import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "duration"
MAX_LINES = 60


def _imports(path: Path, runtime: bool = False) -> set[str]:
    """The duration modules a file imports (`from duration import x` and `duration.x`);
    with `runtime`, only those it imports when it runs (`if TYPE_CHECKING:` blocks aside)."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            type_only = isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
            if not (runtime and type_only):
                self.generic_visit(node)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.module == "duration":
                found.update(a.name for a in node.names)
            elif (node.module or "").startswith("duration."):
                found.add(node.module.split(".")[1])

    Visitor().visit(ast.parse(path.read_text()))
    return found


@pytest.mark.parametrize("module", ["registry", "predict", "tune", "model", "tracking"])
def test_no_stage_reaches_into_train_for_helpers(module):
    """MLflow helpers live in `tracking`, estimators in `estimators`: `train` only trains."""
    assert "train" not in _imports(SRC / f"{module}.py")


def test_the_tracking_helpers_do_not_depend_on_the_stages():
    assert _imports(SRC / "tracking.py") <= {"config", "data", "errors", "matrices", "server"}


def test_the_logged_model_carries_exactly_the_modules_it_imports():
    """A model loads from the code it was logged with: MODEL_MODULES is model.py's import
    closure (function-level imports included), and nothing more."""
    from duration.model import MODEL_MODULES

    seen, todo = {"__init__"}, ["model"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += _imports(SRC / f"{module}.py", runtime=True)
    assert seen == set(MODEL_MODULES)


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


def test_xdist_groups_keep_their_tests_on_one_worker(tmp_path):
    """`make test` relies on `--dist loadgroup` to build each expensive session fixture (the
    first pipeline, the PostgreSQL cluster) once; pytest 9.2 broke that silently."""
    (tmp_path / "test_g.py").write_text(
        "import os, pytest\n"
        'pytestmark = pytest.mark.xdist_group("g")\n'
        + "".join(f"def test_{i}(): print(os.environ['PYTEST_XDIST_WORKER'])\n" for i in range(6))
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
         *[a for p in ("cacheprovider", "randomly", "nbmake", "hypothesispytest", "anyio")
           for a in ("-p", f"no:{p}")], str(tmp_path / "test_g.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    workers = {line.split()[0] for line in out.stdout.splitlines() if "PASSED" in line}
    assert out.returncode == 0 and len(workers) == 1, out.stdout[-2000:]
