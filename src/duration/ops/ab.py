"""`duration ab report`: the arms that served a month, judged on its rides' real durations.

It joins the prediction log with the month's labelled rides (as `monitor --served` does),
takes the candidate arm (canary or shadow: the one seen last, if several) and Production
while the candidate served, and reports per arm its rides, RMSE with a bootstrap 95% CI,
MAE and slices; then the decision of `duration.core.ab`. A shadow's rides pair one to one
with Production's by request and ride. One run in the `nyc-taxi-duration-ab` experiment
per (color, month, candidate version).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from duration.core import ab
from duration.core.gate import GateRule
from duration.core.metrics import compare_slices, scores, slice_table
from duration.core.schema import Color
from duration.data import tlc
from duration.errors import DurationError
from duration.ops import served
from duration.settings import Settings
from duration.tracking import experiments, runs
from duration.tracking.client import client
from duration.tracking.names import AB_EXPERIMENT, DEPLOY_EXPERIMENT

KEY = ["request_id", "ride_id"]  # one served ride


@dataclass(kw_only=True)
class ABReport:
    """What `report` measured and decided."""

    run_id: str
    model_name: str
    month: str
    color: str
    decision: str
    reason: str
    candidate_role: str
    difference: dict
    arms: list[dict] = field(default_factory=list)
    slices: list[dict] = field(default_factory=list)


def _candidate(labelled: pd.DataFrame) -> tuple[str, str]:
    """(role, version) of the candidate arm seen last in the month's labelled rows."""
    cands = labelled[labelled["arm"].isin(["canary", "shadow"])]
    if cands.empty:
        raise DurationError(
            "no canary or shadow served these rides: start one (`duration deploy --canary N "
            "--weight W` or `--shadow N`), replay the month, then report"
        )
    last = cands.sort_values("served_at").iloc[-1]
    return str(last["arm"]), str(last["model_version"])


def _arms(labelled: pd.DataFrame, role: str, version: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Production's rides and the candidate's: for a shadow, the same rides paired in one
    order; for a canary, Production's while the canary served."""
    cand = labelled[(labelled["arm"] == role) & (labelled["model_version"] == version)]
    prod = labelled[labelled["arm"] == "production"]
    if role == "shadow":
        both = prod.merge(cand[[*KEY, "prediction"]], on=KEY, suffixes=("", "_candidate"))
        pair = both.assign(prediction=both["prediction_candidate"], model_version=version,
                           arm=role)  # fmt: skip
        return both.drop(columns="prediction_candidate"), pair.drop(columns="prediction_candidate")
    lo, hi = cand["served_at"].min(), cand["served_at"].max()
    return prod[(prod["served_at"] >= lo) & (prod["served_at"] <= hi)], cand


def _weight(name: str, version: str, role: str) -> int:
    """The weight the candidate was deployed with (its latest deploy run's)."""
    found = client().search_runs(
        [experiments.experiment_id(DEPLOY_EXPERIMENT)],
        f"tags.model_name = '{name}' and tags.version = '{version}' and tags.role = '{role}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )  # fmt: skip
    return int(found[0].data.params.get("weight", 0)) if found else 0


def _arm_row(rides: pd.DataFrame, role: str, weight: int) -> dict:
    se = (rides["prediction"].to_numpy() - rides["duration"].to_numpy()) ** 2
    ci = ab.rmse_interval(se)
    s = scores(rides["duration"].to_numpy(), rides["prediction"].to_numpy())
    return {"version": str(rides["model_version"].iloc[0]), "role": role, "weight": weight,
            "rides": len(rides), "rmse": ci.value, "ci_low": ci.low, "ci_high": ci.high,
            "mae": s["mae"]}  # fmt: skip


def measure(settings: Settings, color: Color | str, month: str, rule: GateRule) -> ABReport:
    """Join, split into arms, and decide."""
    j = served.join(settings, color, month)
    role, version = _candidate(j.labelled)
    prod, cand = _arms(j.labelled, role, version)
    for what, rides in (("Production", prod), (f"the {role}", cand)):
        if len(rides) < ab.MIN_RIDES:
            raise DurationError(
                f"{what} has {len(rides)} labelled rides of {month} (an arm needs "
                f"{ab.MIN_RIDES}): replay more of the month (`duration traffic --month {month}`)"
            )
    name = str(cand["model_name"].iloc[0])
    weight = _weight(name, version, role) if role == "canary" else 100
    boroughs = tlc.boroughs(settings)
    tables = [slice_table(r, r["prediction"].to_numpy(), boroughs) for r in (prod, cand)]
    slices = compare_slices(*tables)
    se = [(r["prediction"].to_numpy() - r["duration"].to_numpy()) ** 2 for r in (prod, cand)]
    d = ab.decide(se[0], se[1], paired=role == "shadow", slices=slices, rule=rule)
    return ABReport(
        run_id="", model_name=name, month=month, color=Color(color).value, decision=d.decision,
        reason=d.reason, candidate_role=role,
        difference={**asdict(d.difference), "paired": d.paired, "wilcoxon_p": d.wilcoxon_p},
        arms=[_arm_row(prod, "production", 100 - weight if role == "canary" else 100),
              _arm_row(cand, role, weight)],
        slices=slices.to_dict("records"),
    )  # fmt: skip


def log(r: ABReport) -> str:
    """The report as the one run of (color, month, candidate version) in the A/B experiment."""
    import mlflow  # deferred: MLflow takes seconds to import

    prod, cand = r.arms
    exp = experiments.experiment_id(AB_EXPERIMENT)
    where = (f"tags.month = '{r.month}' and tags.color = '{r.color}' and "
             f"tags.candidate_version = '{cand['version']}'")  # fmt: skip
    earlier = client().search_runs([exp], where)
    tags = {"model_name": r.model_name, "month": r.month, "color": r.color, "decision": r.decision,
            "reason": r.reason[:500], "role": r.candidate_role,
            "candidate_version": cand["version"], "production_version": prod["version"],
            **runs.process_tags()}  # fmt: skip
    with runs.active_run(experiment_id=exp, run_name=f"ab-{r.month}-v{cand['version']}",
                         tags=tags) as run:  # fmt: skip
        mlflow.log_params({"candidate_weight": cand["weight"], "production_weight":
                           prod["weight"], "months": r.month})  # fmt: skip
        values = {f"{a['role']}_{k}": a[k] for a in r.arms for k in
                  ("rides", "rmse", "ci_low", "ci_high", "mae")}  # fmt: skip
        values |= {f"difference_{k}": v for k, v in r.difference.items()
                   if isinstance(v, float) and not math.isnan(v)}  # fmt: skip
        mlflow.log_metrics({k: float(v) for k, v in values.items()})
        with tempfile.TemporaryDirectory() as tmp:
            pd.DataFrame(r.arms).to_csv(Path(tmp) / "arms.csv", index=False)
            pd.DataFrame(r.slices).to_csv(Path(tmp) / "slices.csv", index=False)
            (Path(tmp) / "report.json").write_text(json.dumps(asdict(r), indent=2, default=str))
            mlflow.log_artifacts(tmp, "ab")
        run_id = run.info.run_id
    for old in earlier:
        client().delete_run(old.info.run_id)
    return run_id


def report(settings: Settings, color: Color | str, month: str, rule: GateRule) -> ABReport:
    """Measure and decide on `month`, and log the run."""
    r = measure(settings, color, month, rule)
    r.run_id = log(r)
    return r
