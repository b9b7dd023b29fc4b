"""What a training job is asked to do, checked before any heavy library loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from duration.core.schema import ModelKind
from duration.errors import DurationError
from duration.ops.pipeline import baseline_groups
from duration.ops.specs import PipelineRequest
from duration.training.config import SearchBackend, SearchConfig, parse_baselines


@pytest.mark.parametrize(
    "text, kinds, groups",
    [
        (
            "all",
            None,
            {"course": ["linear"], "default": ["linear", "ridge", "random_forest", "xgboost"]},
        ),
        ("none", (), {"default": []}),
        (
            "xgboost, linear,linear",
            ("xgboost", "linear"),
            {"course": ["linear"], "default": ["linear", "xgboost"]},
        ),
    ],
)
def test_baselines_choose_what_the_pipeline_trains(text, kinds, groups):
    chosen = parse_baselines(text)
    assert chosen == (None if kinds is None else tuple(ModelKind(k) for k in kinds))
    req = PipelineRequest(baselines=chosen)
    got = baseline_groups(req)
    assert {fs.value: [k.value for k in ks] for fs, ks in got.items()} == groups
    assert list(got)[-1] == req.features  # the search's set last: its matrices stay loaded


@pytest.mark.parametrize("text", ["svm", "all,none", "", "linear,svm"])
def test_unknown_baselines_are_one_line_naming_the_kinds(text):
    with pytest.raises(DurationError, match=f"--baselines {text!r}: use all, none.*random_forest"):
        parse_baselines(text)


@pytest.mark.parametrize(
    "config, needle",
    [
        (SearchConfig(trials=0), "--trials 0"),
        (SearchConfig(kind=ModelKind.linear), "no search space"),
        (SearchConfig(timeout=0), "--timeout 0"),
        (SearchConfig(max_rounds=0), "--max-rounds 0"),
        (SearchConfig(parallelism=2), "--parallelism 2 needs --backend spark"),
        (SearchConfig(backend=SearchBackend.spark, parallelism=0), "--parallelism 0"),
        (SearchConfig(budget_rows=999), "--budget-rows 999"),
        (SearchConfig(refit=0), "--refit 0"),
    ],
)
def test_a_search_that_cannot_run_is_refused_in_one_line(config, needle):
    with pytest.raises(DurationError, match=needle):
        config.check()
    SearchConfig().check()  # the defaults run


def test_requests_check_their_flags_without_the_ml_stack():
    """The CLI checks a search, a pipeline and a cycle before scikit-learn, hyperopt or
    MLflow is imported: a bad flag is refused in well under a second."""
    code = (
        "import sys; from duration.ops.specs import PipelineRequest, CycleRequest; "
        "from duration.training.config import SearchConfig; "
        "PipelineRequest(search=SearchConfig()).check(); CycleRequest(month='2021-04').check(); "
        "heavy = {'sklearn', 'hyperopt', 'mlflow', 'xgboost', 'pandas', 'scipy'} & "
        "{m.split('.')[0] for m in sys.modules}; print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
