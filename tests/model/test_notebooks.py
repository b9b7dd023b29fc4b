"""Both notebooks execute top to bottom against the test server and the mirror."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT
from tests.model.conftest import NAME

# Under pytest-xdist (`make test`: -n 2 --dist loadgroup) this module runs on one worker,
# so its expensive session fixture (the first pipeline) is built once.
pytestmark = pytest.mark.xdist_group("first")

# What each notebook must show once run: text from its own outputs, not from the test.
SHOWS = {
    "01-explore-data.ipynb": ["kept by the 1-60 minute filter", "Manhattan"],
    "02-experiment-tracking.ipynb": ["Production", "trial-", "by_alias"],
}


@pytest.mark.parametrize("name", sorted(SHOWS))
def test_notebook_executes(name, first, settings, monkeypatch):
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
    text = "\n".join(
        o.get("text", "") + o.get("data", {}).get("text/plain", "")
        for o in outputs
        if o.get("output_type") in {"stream", "execute_result", "display_data"}
    )
    for needle in SHOWS[name]:
        assert needle in text, f"{name} did not show {needle!r}"
