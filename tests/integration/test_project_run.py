"""The README's `mlflow run` command, run exactly as written against a real tracking server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


def readme_command() -> str:
    """The one `mlflow run ...` line of the README."""
    (line,) = re.findall(r"^mlflow run .*$", (ROOT / "README.md").read_text(), re.M)
    return line


def test_the_readmes_mlflow_run_trains_one_model_tagged_with_the_project_run(
    vectorized, mlflow_server
):
    """`mlflow run . -e train ...` trains one model as its own run, tagged with the project
    run; the project run (made by `mlflow run`) ends FINISHED."""
    import mlflow

    command = readme_command()
    assert command == "mlflow run . -e train -P model=ridge --env-manager local"
    exe = Path(sys.executable)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server,  # the README's export, to this test's server
        "DURATION_DATA_DIR": str(vectorized.paths.data),
        "PATH": f"{exe.parent}{os.pathsep}{os.environ['PATH']}",  # as `source activate` does
    }
    earlier = mlflow.search_runs(experiment_names=["Default"])
    before = set(earlier["run_id"]) if "run_id" in earlier else set()
    proc = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    project = mlflow.search_runs(experiment_names=["Default"])
    project = project[~project["run_id"].isin(before)]
    assert len(project) == 1 and project["status"].iloc[0] == "FINISHED"
    assert project["params.model"].iloc[0] == "ridge"
    trained = mlflow.search_runs(
        experiment_names=["nyc-taxi-duration"],
        filter_string=f"tags.project_run_id = '{project['run_id'].iloc[0]}'",
    )
    assert len(trained) == 1 and trained["status"][0] == "FINISHED"
    assert trained["metrics.val_rmse"][0] > 0 and trained["tags.model"][0] == "ridge"
