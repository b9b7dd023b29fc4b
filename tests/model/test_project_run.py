"""`mlflow run` of an MLflow Projects entry point, against a real tracking server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_mlflow_run_of_the_train_entry_point(vectorized, mlflow_server, tmp_path):
    """`mlflow run . -e train` trains one model as its own run, tagged with the project run;
    the project run (made by `mlflow run`) ends FINISHED."""
    import mlflow

    exe = Path(sys.executable)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "DURATION_DATA_DIR": str(vectorized.data_dir),
        "PATH": f"{exe.parent}{os.pathsep}{os.environ['PATH']}",  # as in an activated venv
    }
    proc = subprocess.run(
        [str(exe.with_name("mlflow")), "run", ".", "-e", "train", "-P", "model=ridge",
         "--env-manager", "local", "--experiment-name", "duration-project-test"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    project = mlflow.search_runs(experiment_names=["duration-project-test"])
    assert len(project) == 1 and project["status"][0] == "FINISHED"
    assert project["params.model"][0] == "ridge"
    trained = mlflow.search_runs(
        experiment_names=["nyc-taxi-duration"],
        filter_string=f"tags.project_run_id = '{project['run_id'][0]}'",
    )
    assert len(trained) == 1 and trained["status"][0] == "FINISHED"
    assert trained["metrics.val_rmse"][0] > 0 and trained["tags.model"][0] == "ridge"
