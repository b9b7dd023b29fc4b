"""Both notebooks execute top to bottom against the test server and the mirror."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT
from tests.model.conftest import NAME


@pytest.mark.parametrize("name", ["01-explore-data.ipynb", "02-experiment-tracking.ipynb"])
def test_notebook_executes(name, first, settings, monkeypatch, tmp_path):
    monkeypatch.setenv("DURATION_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("DURATION_TLC_URL", settings.tlc_url)
    monkeypatch.setenv("DURATION_MODEL_NAME", NAME)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert os.environ["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")
    assert Path(settings.data_dir).exists()
