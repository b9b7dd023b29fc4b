"""Register a search's best trial (by validation RMSE) in Staging, with its lineage and its
reference profile; a registration that fails halfway is undone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from duration.core.schema import check_month
from duration.data import prepare
from duration.errors import DurationError
from duration.registry import profile
from duration.registry.evaluation import score
from duration.registry.uris import exists, move, version_in
from duration.settings import Settings
from duration.tracking import datasets, experiments, runs
from duration.tracking.client import client
from duration.tracking.names import EVAL_EXPERIMENT, MODEL_NAME, SEARCH_EXPERIMENT, TOP_N


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One of the search's best trials, as `register` weighs it."""

    run_id: str
    model_uri: str
    val_rmse: float
    test_rmse: float | None = None  # on the test month, for information only


@dataclass(frozen=True, kw_only=True)
class Lineage:
    """Where a version comes from: what it learned on, and the data's digests."""

    model: str
    color: str
    feature_set: str
    train_month: str
    val_month: str
    git_commit: str
    digests: dict[str, str]  # dataset name -> digest (training, validation, test)
    test_month: str | None = None


@dataclass(frozen=True, kw_only=True)
class Registered:
    """The outcome of `register`."""

    model_name: str
    model_version: str
    stage: str
    run_id: str
    val_rmse: float
    test_rmse: float | None
    test_month: str | None
    candidates: list[Candidate] = field(default_factory=list)


def latest_search() -> Any:
    """The most recent search's parent run, or a one-line error if none ran."""
    exp = client().get_experiment_by_name(SEARCH_EXPERIMENT)
    found: list = []
    if exp is not None:
        found = client().search_runs(
            [exp.experiment_id],
            filter_string="tags.best_run_id LIKE '%'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    if not found:
        raise DurationError(
            "no hyperparameter search has run on this tracking server: "
            "run `duration tune` (or `make pipeline`) first"
        )
    return found[0]


def search_run(parent_run_id: str | None) -> Any:
    """The search's parent run by id, or the latest search's when no id is given."""
    if parent_run_id is None:
        return latest_search()
    run = client().get_run(parent_run_id)
    if "best_run_id" not in run.data.tags:
        raise DurationError(
            f"run {parent_run_id} is not a finished hyperparameter search: give the parent run "
            "of a `duration tune`"
        )
    return run


def top_trials(parent: Any, top_n: int) -> list:
    """The search's best `top_n` trials by val_rmse that logged a model."""
    return list(
        client().search_runs(
            [parent.info.experiment_id],
            filter_string=(
                f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
                "and tags.model_uri LIKE 'models:/%' and attributes.status = 'FINISHED'"
            ),
            order_by=["metrics.val_rmse ASC"],
            max_results=top_n,
        )
    )


def _evaluate(settings: Settings, parent: Any, trials: list, month: str, ds: Any) -> list:
    """Score each trial's model on the test month, for information (one eval run each)."""
    import mlflow  # deferred: MLflow takes seconds to import

    color = parent.data.tags["color"]
    rides = prepare.load_processed(settings, color, month)
    out = []
    for run in trials:
        uri = run.data.tags["model_uri"]
        rmse = score(uri, rides, color)
        tags = {
            "source_run_id": run.info.run_id,
            "search_run_id": parent.info.run_id,
            "model_uri": uri,
            "test_month": month,
            **runs.process_tags(),
        }
        with runs.active_run(
            experiment_id=experiments.experiment_id(EVAL_EXPERIMENT),
            run_name=f"eval-{run.info.run_name}",
            tags=tags,
        ) as active:
            datasets.log_dataset(active.info.run_id, ds, "test")
            mlflow.log_metrics({"test_rmse": rmse, "val_rmse": run.data.metrics["val_rmse"]})
        out.append(
            Candidate(
                run_id=run.info.run_id,
                model_uri=uri,
                val_rmse=run.data.metrics["val_rmse"],
                test_rmse=rmse,
            )
        )
    return out


def register(
    settings: Settings,
    test_month: str | None,
    name: str = MODEL_NAME,
    top_n: int = TOP_N,
    parent_run_id: str | None = None,
) -> Registered:
    """Register the search's best trial (by validation RMSE) in Staging.

    Its top-N trials are scored on the test month for information (the course's table);
    with no test month (the cycle, whose gate month must stay unseen) none is scored.
    The search is `parent_run_id`'s, or the latest on the server when it is None.
    """
    parent = search_run(parent_run_id)
    trials = top_trials(parent, top_n)
    if not trials:
        raise DurationError(
            f"search {parent.info.run_id} has no finished trial with a model: run `duration tune`"
        )
    tags = parent.data.tags
    inputs = client().get_run(parent.info.run_id).inputs  # a searched run: no inputs
    digests = {d.dataset.name: d.dataset.digest for d in (inputs.dataset_inputs if inputs else [])}
    if test_month is None:
        candidates = [
            Candidate(
                run_id=r.info.run_id,
                model_uri=r.data.tags["model_uri"],
                val_rmse=r.data.metrics["val_rmse"],
            )
            for r in trials
        ]
    else:
        ds = datasets.dataset(settings, tags["color"], check_month(test_month, "--test"))
        candidates = _evaluate(settings, parent, trials, test_month, ds)
        digests["test"] = ds.digest
    # Selected by validation RMSE: the test month plays no part in the choice, so the chosen
    # model's test RMSE (and the promotion gate on that month) stays honest.
    best = min(candidates, key=lambda c: c.val_rmse)
    best_tags = client().get_run(best.run_id).data.tags
    lineage = Lineage(
        model=best_tags.get("model", ""),
        color=tags["color"],
        feature_set=tags["feature_set"],
        train_month=tags["train_month"],
        val_month=tags["val_month"],
        git_commit=best_tags.get("git_commit", "unknown"),
        digests=digests,
        test_month=test_month,
    )
    version = register_version(settings, name, best, lineage)
    return Registered(
        model_name=name,
        model_version=version,
        stage="Staging",
        run_id=best.run_id,
        val_rmse=best.val_rmse,
        test_rmse=best.test_rmse,
        test_month=test_month,
        candidates=candidates,
    )


def _description(best: Candidate, lin: Lineage) -> str:
    tested = (
        f", tested on {lin.test_month} (test RMSE {best.test_rmse:.4f} min)."
        if lin.test_month and best.test_rmse is not None
        else "."
    )
    return (
        f"{lin.model} on {lin.color} taxi rides, {lin.feature_set} features; trained on "
        f"{lin.train_month}, validated on {lin.val_month} (val RMSE {best.val_rmse:.4f} min)"
        f"{tested}"
    )


def _version_tags(best: Candidate, lin: Lineage) -> dict[str, str]:
    tested = {}
    if lin.test_month and best.test_rmse is not None:
        tested = {"test_rmse": f"{best.test_rmse:.6f}", "test_month": lin.test_month}
    return {
        "val_rmse": f"{best.val_rmse:.6f}",
        **tested,
        "feature_set": lin.feature_set,
        "color": lin.color,
        "train_month": lin.train_month,
        "val_month": lin.val_month,
        "git_commit": lin.git_commit,
        "source_run_id": best.run_id,
        "data_digests": ", ".join(f"{k}:{v}" for k, v in sorted(lin.digests.items()) if k != "test")
        + (f", test:{lin.digests['test']}" if "test" in lin.digests else ""),
    }


def register_version(settings: Settings, name: str, best: Candidate, lin: Lineage) -> str:
    """Create the version, describe and tag it, save its reference profile, and move it to
    Staging (the Staging version it replaces to Archived); undone on failure."""
    import mlflow  # deferred: MLflow takes seconds to import

    c = client()
    previous = version_in(name, "Staging") if exists(name) else None
    mv = mlflow.register_model(best.model_uri, name)
    try:
        c.update_model_version(name, mv.version, description=_description(best, lin))
        for k, v in _version_tags(best, lin).items():
            c.set_model_version_tag(name, mv.version, k, v)
        if not profile.exists(best.run_id):  # a run registered before has its own
            profile.build(settings, name, mv.version)
        move(name, mv.version, "Staging")
        if previous is not None and previous.version != mv.version:
            c.transition_model_version_stage(name, previous.version, "Archived")
    except Exception:
        c.delete_model_version(name, mv.version)
        if previous is not None:
            move(name, previous.version, "Staging")
        raise
    return str(mv.version)
