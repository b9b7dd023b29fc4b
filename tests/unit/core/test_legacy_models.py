"""Models logged by duration 0.1.0 still load and predict exactly as they did."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "legacy-0.1"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
MODELS = sorted(EXPECTED["predictions"])


def records() -> pd.DataFrame:
    """The raw records the predictions were made from, as a consumer sends them."""
    raw = pd.DataFrame(EXPECTED["records"])
    return raw.assign(**{c: pd.to_datetime(raw[c]) for c in raw if c.endswith("_datetime")})


@pytest.mark.parametrize("key", MODELS)
def test_a_legacy_model_predicts_the_same_in_this_process(key, monkeypatch):
    """Here the package is imported before the model: its code file's `duration.model`
    resolves to this package, which must still give the same answers."""
    import mlflow

    import duration

    monkeypatch.setattr(sys, "path", list(sys.path))  # the model prepends its code folder
    model = mlflow.pyfunc.load_model(str(FIXTURES / key))
    impl = model.unwrap_python_model()
    assert Path(sys.modules[type(impl).__module__].__file__).is_relative_to(
        Path(duration.__file__).parent
    )  # this package's class, not the model's copy
    pred = model.predict(records())
    np.testing.assert_array_equal(pred, np.asarray(EXPECTED["predictions"][key]))


def test_legacy_models_predict_the_same_in_a_fresh_process():
    """A scoring server loads the model first: the model's own copy of its code is found."""
    code = (
        "import json, sys; import mlflow; import pandas as pd\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from test_legacy_models import records\n"
        "models = {k: mlflow.pyfunc.load_model(f'{sys.argv[1]}/{k}') for k in sys.argv[3:]}\n"
        "out = {k: m.predict(records()).tolist() for k, m in models.items()}\n"
        "where = {k: sys.modules[type(m.unwrap_python_model()).__module__].__file__"
        " for k, m in models.items()}\n"
        "print(json.dumps([out, where]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(FIXTURES), str(Path(__file__).parent), *MODELS],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out, where = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == EXPECTED["predictions"]
    for path in where.values():  # 0.1.0's code as a model carries it, not this package
        assert Path(path).relative_to(FIXTURES).parts[1:] == ("code", "duration", "model.py")
