"""Register, promote and predict against a real server; serve the Production model."""

from __future__ import annotations

import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from duration.core.gate import GateRule
from duration.data import matrices, prepare
from duration.errors import DurationError
from duration.registry import uris
from duration.registry.evaluation import predict_frame
from duration.registry.promote import promote
from duration.registry.register import Candidate, Lineage, register, register_version, top_trials
from duration.training.config import SearchConfig
from duration.training.search import search
from tests.helpers import assert_one_line_error, invoke, versions
from tests.integration.conftest import NAME

# Under pytest-xdist (`make test`: -n 2 --dist loadgroup) this module runs on one worker,
# so its expensive session fixture (the first pipeline) is built once.
pytestmark = pytest.mark.xdist_group("first")


@pytest.fixture
def name(request) -> str:
    """A registered-model name of this test's own, so tests share no registry state."""
    return f"t-{request.node.name[:40]}-{uuid.uuid4().hex[:6]}".replace("[", "-").replace("]", "")


def test_first_pipeline_ends_in_production(first):
    s = first.summary()
    assert s["stage"] == "Production" and s["model_version"] == "1"
    assert {"best_val_rmse", "test_rmse", "model_name", "model_version", "stage"} <= set(s)
    v = MlflowClient().get_model_version(NAME, "1")
    assert v.current_stage == "Production"
    assert MlflowClient().get_registered_model(NAME).aliases == {"production": "1"}
    assert "2021-03" in v.description and v.tags["feature_set"] == "default"
    assert {"val_rmse", "test_rmse", "git_commit", "data_digests"} <= set(v.tags)
    assert float(v.tags["test_rmse"]) == pytest.approx(s["test_rmse"])
    assert v.run_id == first.registered["run_id"]  # lineage: version -> trial run
    models = [b["model"] for b in first.baselines]
    assert models == ["linear", "linear", "ridge", "xgboost"]  # as asked: no random forest
    evals = mlflow.search_runs(
        experiment_names=["nyc-taxi-duration-evaluation"],
        filter_string=f"tags.search_run_id = '{first.search['parent_run_id']}'",
    )
    trials = {r["run_id"] for r in first.registered["candidates"]}
    assert set(evals["tags.source_run_id"]) == trials and len(trials) == 2
    assert evals["metrics.test_rmse"].notna().all()
    # selected by validation RMSE: the test month plays no part in the choice
    assert first.registered["val_rmse"] == pytest.approx(evals["metrics.val_rmse"].min())
    assert first.registered["run_id"] == first.search["best_run_id"]


def test_the_first_pipeline_times_its_stages_on_a_parent_run(first):
    s = first.summary()
    stages = list(s["timings"])
    assert stages[:4] == ["download", "prepare", "vectorize", "load course"]
    assert stages[-3:] == ["search", "register", "promote"]
    assert "baseline linear course" in stages and "baseline xgboost default" in stages
    assert all(t["seconds"] >= 0 and t["peak_rss_mb"] > 0 for t in s["timings"].values())
    assert sum(t["seconds"] for t in s["timings"].values()) <= s["wall_s"]
    run = MlflowClient().get_run(s["pipeline_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "pipeline-green-2021-01"
    assert run.data.tags["search_run_id"] == first.search["parent_run_id"]
    assert run.data.tags["model_version"] == "1"
    assert run.data.metrics["seconds_search"] == pytest.approx(s["timings"]["search"]["seconds"])
    assert run.data.metrics["peak_rss_mb_register"] > 0
    kids = mlflow.search_runs(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'",
    )
    assert sorted(kids["run_id"]) == sorted(b["run_id"] for b in first.baselines)
    names = {f.path for f in MlflowClient().list_artifacts(run.info.run_id)}
    assert names == {"timings.json"}


def _search(inputs, rounds: int, seed: int) -> str:
    config = SearchConfig(trials=1, seed=seed, max_rounds=rounds, progress=False)
    return search(inputs, config).parent_run_id


def test_worse_candidate_stays_in_staging_then_better_one_wins(first, vectorized, name):
    parent = first.search["parent_run_id"]
    assert register(vectorized, "2021-03", name, parent_run_id=parent).model_version == "1"
    assert promote(vectorized, name).promoted
    inputs = matrices.load_inputs(vectorized, "green", "default", "2021-01", "2021-02")
    worse = register(vectorized, "2021-03", name, parent_run_id=_search(inputs, 2, 1))
    assert worse.model_version == "2"
    d = promote(vectorized, name)
    assert not d.promoted and d.production == "1"
    assert "does not beat" in d.reason and f"{d.challenger_rmse:.4f}" in d.reason
    assert versions(name)["2"].current_stage == "Staging"
    assert versions(name)["1"].current_stage == "Production"
    assert versions(name)["2"].tags["promotion_decision"] == "rejected"
    again = promote(vectorized, name)  # re-running changes nothing
    assert not again.promoted and versions(name)["1"].current_stage == "Production"

    better = register(vectorized, "2021-03", name, parent_run_id=_search(inputs, 150, 1))
    assert better.model_version == "3"
    assert versions(name)["2"].current_stage == "Archived"  # the old challenger is replaced
    d = promote(vectorized, name)
    assert d.promoted and d.production == "3"
    vs = versions(name)
    assert vs["3"].current_stage == "Production" and vs["1"].current_stage == "Archived"
    assert MlflowClient().get_registered_model(name).aliases == {"production": "3"}
    rerun = promote(vectorized, name)
    assert not rerun.promoted and versions(name)["3"].current_stage == "Production"
    runs = mlflow.search_runs(
        experiment_names=["nyc-taxi-duration-promotion"],
        filter_string=f"tags.model_name = '{name}'",
    )
    # the last promote found no Staging version: nothing to decide, so no decision run
    assert "nothing to promote" in rerun.reason
    assert len(runs) == 4 and sorted(runs["params.promoted"]) == ["False", "False", "True", "True"]


def test_min_improvement_above_zero(first, vectorized, name):
    """A challenger must beat Production by more than --min-improvement to be promoted."""
    inputs = matrices.load_inputs(vectorized, "green", "default", "2021-01", "2021-02")
    register(vectorized, "2021-03", name, parent_run_id=_search(inputs, 2, 1))
    assert promote(vectorized, name).promoted  # a weak v1 (2 rounds) in Production
    parent = first.search["parent_run_id"]
    register(vectorized, "2021-03", name, parent_run_id=parent)  # v2: 20 rounds
    probe = promote(vectorized, name, rule=GateRule(min_improvement=1000.0))
    gain = probe.champion_rmse - probe.challenger_rmse
    assert gain > 0.5 and not probe.promoted and probe.production == "1"
    assert "by more than 1000.0" in probe.reason
    assert versions(name)["2"].current_stage == "Staging"
    assert not promote(vectorized, name, rule=GateRule(min_improvement=gain + 0.01)).promoted
    d = promote(vectorized, name, rule=GateRule(min_improvement=round(gain - 0.01, 4)))
    assert d.promoted and d.production == "2"
    assert versions(name)["2"].current_stage == "Production"
    assert versions(name)["1"].current_stage == "Archived"


def test_stage_and_alias_uris_load_the_same_version(first, vectorized):
    by_stage = uris.resolve_version(f"models:/{NAME}/Production")
    by_alias = uris.resolve_version(f"models:/{NAME}@production")
    assert by_stage == by_alias
    rides = prepare.load_processed(vectorized, "green", "2021-04").head(200)
    a = predict_frame(uris.load(f"models:/{NAME}/Production"), rides, "green")
    b = predict_frame(uris.load(f"models:/{NAME}@production"), rides, "green")
    np.testing.assert_array_equal(a, b)


def test_a_loaded_model_is_reused_until_its_stage_moves_or_is_evicted(first, name, monkeypatch):
    """`load` reuses a model this process loaded, by the version behind the URI: a stage
    that moved loads the version it now points at, and only the last few are kept (here
    two, so the third model loaded evicts the first for real)."""
    monkeypatch.setattr(uris, "CACHE", uris.LoadCache(maxsize=2))
    trials = top_trials(MlflowClient().get_run(first.search["parent_run_id"]), 2)
    for run in trials:  # two versions: the first search's two trials
        mlflow.register_model(run.data.tags["model_uri"], name)
    uris.move(name, "1", "Production")
    v1 = uris.load(f"models:/{name}/Production")
    assert uris.load(f"models:/{name}@production") is v1
    assert uris.load(f"models:/{name}/1") is v1
    uris.move(name, "2", "Production")
    v2 = uris.load(f"models:/{name}/Production")
    assert v2 is not v1 and v2 is uris.load(f"models:/{name}/2")
    assert v2.model_id == trials[1].data.tags["model_uri"].removeprefix("models:/")
    assert v1.model_id == trials[0].data.tags["model_uri"].removeprefix("models:/")
    other = uris.load(first.baselines[0]["model_uri"])  # a third: v1, used least lately, goes
    assert len(uris.CACHE.models) == 2 and uris.load(f"models:/{name}/2") is v2
    again = uris.load(f"models:/{name}/1")
    assert again is not v1 and again.model_id == v1.model_id  # loaded anew
    assert uris.load(first.baselines[0]["model_uri"]) is not other  # v2 and v1 pushed it out


def test_predict_writes_the_file(first, cli_env, tmp_path):
    out = tmp_path / "pred.parquet"
    proc = invoke(
        "predict",
        "--model",
        f"models:/{NAME}@production",
        "--month",
        "2021-04",
        "--output",
        str(out),
        env=cli_env,
    )
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(out)
    assert list(df.columns) == [
        "pickup_datetime",
        "PULocationID",
        "DOLocationID",
        "trip_distance",
        "predicted_duration",
        "duration",
        "model_name",
        "model_version",
    ]
    assert df["model_name"].unique().tolist() == [NAME]
    rmse = float(np.sqrt(np.mean((df.predicted_duration - df.duration) ** 2)))
    assert f"RMSE {rmse:.4f}" in proc.stdout
    assert 4 < rmse < 8


def test_missing_columns_are_named(first, vectorized):
    rides = prepare.load_processed(vectorized, "green", "2021-04").head(5)
    with pytest.raises(DurationError, match="trip_distance"):
        predict_frame(
            uris.load(f"models:/{NAME}@production"),
            rides.drop(columns=["trip_distance"]),
            "green",
        )


@pytest.mark.parametrize(
    "args, needles",
    [
        (["predict", "--model", "models:/no-such-model@production"], ["no-such-model"]),
        (["predict", "--model", f"models:/{NAME}@champion"], ["@champion", "production"]),
        (["predict", "--model", f"models:/{NAME}/Bogus"], ["Bogus", "not a stage"]),
        (["predict", "--model", f"models:/{NAME}/99"], [f"cannot load models:/{NAME}/99"]),
        (
            ["predict", "--model", f"models:/{NAME}@production", "--month", "2019-02"],
            ["2019-02", "not available"],
        ),
        (["promote", "--name", "no-such-model"], ["no-such-model"]),
    ],
)
def test_bad_registry_input(first, cli_env, args, needles):
    assert_one_line_error(invoke(*args, env=cli_env), *needles)


def test_promote_with_no_staging_version(cli_env, name):
    MlflowClient().create_registered_model(name)
    assert_one_line_error(
        invoke("promote", "--name", name, env=cli_env),
        "no version in Staging",
        "duration register",
    )


def test_a_failure_halfway_leaves_the_registry_unchanged(first, vectorized, name):
    """A registration that fails after the version was created is undone."""
    register(vectorized, "2021-03", name, parent_run_id=first.search["parent_run_id"])
    promote(vectorized, name)
    before = {v: (m.current_stage, dict(m.tags)) for v, m in versions(name).items()}
    aliases = MlflowClient().get_registered_model(name).aliases
    # the search's other trial has no reference profile yet, and its version claims a
    # training month the source does not have: building the profile fails after the
    # version was created and tagged
    other = [c for c in first.registered["candidates"] if c["run_id"] != first.registered["run_id"]]
    best = Candidate(run_id=other[0]["run_id"], model_uri=other[0]["model_uri"], val_rmse=1.0)
    lineage = Lineage(
        model="xgboost",
        color="green",
        feature_set="default",
        train_month="2019-07",
        val_month="2021-02",
        git_commit="x",
        digests={},
    )
    with pytest.raises(DurationError, match="2019-07 is not available"):
        register_version(vectorized, name, best, lineage)
    after = {v: (m.current_stage, dict(m.tags)) for v, m in versions(name).items()}
    assert after == before and list(after) == ["1"]
    assert MlflowClient().get_registered_model(name).aliases == aliases == {"production": "1"}
