"""The notebooks execute top to bottom against the test server and the mirror."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT
from tests.integration.conftest import NAME

# What each notebook must show once run: text from its own outputs, not from the test.
SHOWS = {
    "01-explore-data.ipynb": ["kept by the 1-60 minute filter", "Manhattan"],
    "02-experiment-tracking.ipynb": ["Production", "trial-", "by_alias", "peak_rss_mb"],
    "03-monitoring.ipynb": ["2021-04", "promoted", "degraded", "trip_distance", "borough"],
}
# Notebook 03 replays 2021-04 (its default is 2021-04..2023-04) on a model of its own (the
# linear baseline in Production), degraded at an RMSE ratio of 1.0001, with a 1-trial search:
# it retrains and promotes, so the history shows a promotion.
REPLAY = {
    "DURATION_REPLAY_FROM": "2021-04",
    "DURATION_REPLAY_TO": "2021-04",
    "DURATION_CYCLE_TRIALS": "1",
    "DURATION_CYCLE_MAX_ROUNDS": "30",
    "DURATION_RMSE_RATIO": "1.0001",
}


def execute(name: str, env: dict[str, str], monkeypatch) -> None:
    """Run the notebook in a fresh kernel and check what it shows."""
    for key, value in {**env, "MPLBACKEND": "Agg"}.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(
        o.get("text", "") + o.get("data", {}).get("text/plain", "")
        for o in outputs
        if o.get("output_type") in {"stream", "execute_result", "display_data"}
    )
    for needle in SHOWS[name]:
        assert needle in text, f"{name} did not show {needle!r}"


def data_env(settings) -> dict[str, str]:
    return {
        "DURATION_DATA_DIR": str(settings.paths.data),
        "DURATION_TLC_URL": settings.paths.tlc_url,
    }


# Under pytest-xdist (`make test`: -n 2 --dist loadgroup) these run on the first pipeline's
# worker, so that expensive session fixture is built once.
@pytest.mark.xdist_group("first")
@pytest.mark.parametrize("name", ["01-explore-data.ipynb", "02-experiment-tracking.ipynb"])
def test_notebook_executes(name, first, settings, monkeypatch):
    execute(name, {**data_env(settings), "DURATION_MODEL_NAME": NAME}, monkeypatch)


def test_monitoring_notebook_replays_and_shows_the_history(weak, settings, monkeypatch):
    env = {**data_env(settings), **REPLAY, "DURATION_MODEL_NAME": weak}
    execute("03-monitoring.ipynb", env, monkeypatch)
