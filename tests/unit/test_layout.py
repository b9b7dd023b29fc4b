"""The package's shape: layers, short modules and functions, deferred imports that say so,
what the logged model carries, and imports without side effects."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "duration"
MODULES = sorted(SRC.rglob("*.py"))
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
MAX_INFRA_LINES = 800
MAX_FMT_SKIPS = 20


def name_of(path: Path) -> str:
    """The dotted module name of a file under src/duration."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_is_longer_than_four_hundred_lines():
    long = {p.name: n for p in MODULES if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_infra_is_os_plumbing_of_at_most_eight_hundred_lines():
    """`infra` holds ports, processes, files, resources and nginx's process handling; what
    the project serves or runs on top of them has a package of its own."""
    lines = sum(len(p.read_text().splitlines()) for p in (SRC / "infra").glob("*.py"))
    assert lines <= MAX_INFRA_LINES


def test_the_wheel_holds_the_package_and_no_benchmark():
    """What setuptools packs (`packages.find` under src/): duration's sub-packages only; the
    benchmarks and scripts stay in the repository."""
    from setuptools import find_packages

    found = find_packages(where=str(SRC.parent))
    assert found and all(p == "duration" or p.startswith("duration.") for p in found)
    assert not [p for p in found if "bench" in p]
    assert {"duration.serving", "duration.server", "duration.spark"} <= set(found)


def test_few_lines_escape_the_formatter_and_each_says_why():
    """`# fmt: skip` keeps a table readable, never packs code to meet a cap."""
    skips = [
        (name_of(p), line)
        for p in MODULES
        for line in p.read_text().splitlines()
        if "fmt: skip" in line
    ]
    assert len(skips) <= MAX_FMT_SKIPS
    assert all("fmt: skip -" in line for _, line in skips), skips


def test_no_function_is_longer_than_sixty_lines():
    long = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name_of(path)}:{node.name} ({lines} lines)")
    assert long == []


def _function_imports(tree: ast.AST) -> list[list[ast.stmt]]:
    """The import statements inside functions, in groups of consecutive ones."""
    groups: list[list[ast.stmt]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for block in ast.walk(node):
            body = getattr(block, "body", None)
            if not isinstance(body, list):
                continue
            run: list[ast.stmt] = []
            for stmt in [*body, None]:
                if isinstance(stmt, ast.Import | ast.ImportFrom):
                    run.append(stmt)
                elif run:
                    groups.append(run)
                    run = []
    return groups


def test_an_import_inside_a_function_only_defers_a_heavy_library_and_says_so():
    """Every function-level import (or group of them) carries a `deferred:` comment."""
    silent = []
    for path in MODULES:
        lines = path.read_text().splitlines()
        for group in _function_imports(ast.parse(path.read_text())):
            first, last = group[0].lineno, group[-1].end_lineno or group[-1].lineno
            said = " ".join(lines[first - 2 : last])  # the line before, and the imports
            if "deferred" not in said:
                silent.append(f"{name_of(path)}:{first}")
    assert silent == []


def test_no_import_circle_between_modules():
    import grimp

    graph = grimp.build_graph("duration")
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for nxt in sorted(edges.get(module, ())):
            if state.get(nxt) == 1:
                return [*path, module, nxt]
            if nxt not in state and (found := visit(nxt, [*path, module])):
                return found
        state[module] = 2
        return None

    circles = [c for m in sorted(edges) if m not in state and (c := visit(m, []))]
    assert circles == []


def test_the_logged_model_carries_exactly_the_modules_it_imports():
    """A model loads from the code it was logged with: MODEL_MODULES is core.model's import
    closure (function-level imports included, TYPE_CHECKING ones aside), and nothing more."""
    import grimp

    from duration.core.model import MODEL_MODULES

    graph = grimp.build_graph("duration", exclude_type_checking_imports=True)
    closure = {"duration", "duration.core.model"}
    todo = ["duration.core.model"]
    while todo:
        for found in graph.find_modules_directly_imported_by(todo.pop()):
            parent = found.rsplit(".", 1)[0]
            for module in (found, parent):
                if module not in closure:
                    closure.add(module)
                    todo.append(module)
    carried = {name_of(SRC / f"{m}.py") for m in MODEL_MODULES}
    assert carried == closure


def test_importing_every_module_has_no_side_effect(tmp_path):
    """Importing a module creates no file, changes no environment variable, installs no
    signal handler and leaves the plotting backend alone (the libraries under it are
    imported first: scikit-learn and MLflow set variables of their own)."""
    names = [name_of(p) for p in MODULES]
    code = (
        "import importlib, json, os, signal, sys\n"
        "import matplotlib; matplotlib.use('svg')\n"
        "import sklearn, mlflow, mlflow.pyfunc, xgboost, pandas, pyarrow\n"
        "env = dict(os.environ); handlers = [signal.getsignal(s) for s in signal.valid_signals()]\n"
        "for name in sys.argv[1:]: importlib.import_module(name)\n"
        "after = [signal.getsignal(s) for s in signal.valid_signals()]\n"
        "print(json.dumps({'env': sorted(set(os.environ.items()) ^ set(env.items())),"
        " 'signals': handlers != after, 'files': os.listdir('.'),"
        " 'backend': matplotlib.get_backend()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "env": [],
        "signals": False,
        "files": [],
        "backend": "svg",
    }


def test_figures_draw_without_pyplot():
    import numpy as np

    from duration.training import plots

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
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "-v",
            *[
                a
                for p in ("cacheprovider", "randomly", "nbmake", "hypothesispytest", "anyio")
                for a in ("-p", f"no:{p}")
            ],
            str(tmp_path / "test_g.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    workers = {line.split()[0] for line in out.stdout.splitlines() if "PASSED" in line}
    assert out.returncode == 0 and len(workers) == 1, out.stdout[-2000:]


@pytest.mark.parametrize(
    "layer", ["core", "data", "infra", "tracking", "serving", "server", "spark"]
)
def test_the_lower_layers_never_import_typer(layer):
    """Parsing belongs to the CLI: nothing below it knows about flags' library."""
    found = [
        name_of(p)
        for p in (SRC / layer).rglob("*.py")
        if "typer"
        in {
            a.name.split(".")[0]
            for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, ast.Import)
            for a in n.names
        }
        | {
            (n.module or "").split(".")[0]
            for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, ast.ImportFrom)
        }
    ]
    assert found == []
