"""Models logged by earlier releases still load and predict exactly as they did: 0.1.0's
flat layout (`duration.model`) and 0.3.0's (`duration.core.model`, commit b5f36cc)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
# each release's fixtures, and where a model's own copy of its class lives in it
RELEASES = {
    "legacy-0.1": ("code", "duration", "model.py"),
    "legacy-0.3": ("code", "duration", "core", "model.py"),
}


def expected(release: str) -> dict:
    return json.loads((FIXTURES / release / "expected.json").read_text())


def records(release: str) -> pd.DataFrame:
    """The raw records the predictions were made from, as a consumer sends them."""
    raw = pd.DataFrame(expected(release)["records"])
    return raw.assign(**{c: pd.to_datetime(raw[c]) for c in raw if c.endswith("_datetime")})


CASES = [(r, key) for r in RELEASES for key in sorted(expected(r)["predictions"])]


@pytest.mark.parametrize(("release", "key"), CASES)
def test_a_legacy_model_predicts_the_same_in_this_process(release, key, monkeypatch):
    """Here the package is imported before the model: its code file's import resolves to
    this package, which must still give the same answers."""
    import mlflow

    import duration

    monkeypatch.setattr(sys, "path", list(sys.path))  # the model prepends its code folder
    model = mlflow.pyfunc.load_model(str(FIXTURES / release / key))
    impl = model.unwrap_python_model()
    assert Path(sys.modules[type(impl).__module__].__file__).is_relative_to(
        Path(duration.__file__).parent
    )  # this package's class, not the model's copy
    pred = model.predict(records(release))
    np.testing.assert_array_equal(pred, np.asarray(expected(release)["predictions"][key]))


def test_legacy_models_predict_the_same_in_a_fresh_process():
    """A scoring server loads the model first: the model's own copy of its code is found.
    One process a release (each carries a package named `duration`), run side by side."""
    code = (
        "import json, sys; import mlflow\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from test_legacy_models import records\n"
        "root, release = sys.argv[1], sys.argv[3]\n"
        "models = {k: mlflow.pyfunc.load_model(f'{root}/{release}/{k}') for k in sys.argv[4:]}\n"
        "out = {k: m.predict(records(release)).tolist() for k, m in models.items()}\n"
        "where = {k: sys.modules[type(m.unwrap_python_model()).__module__].__file__"
        " for k, m in models.items()}\n"
        "print(json.dumps([out, where]))"
    )
    procs = {
        release: subprocess.Popen(
            [
                *(sys.executable, "-c", code, str(FIXTURES), str(Path(__file__).parent)),
                *(release, *sorted(expected(release)["predictions"])),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for release in sorted(RELEASES)
    }
    for release, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-2000:]
        out, where = json.loads(stdout.strip().splitlines()[-1])
        assert out == expected(release)["predictions"]
        for path in where.values():  # the release's code as the model carries it
            assert Path(path).relative_to(FIXTURES / release).parts[1:] == RELEASES[release]
