"""`duration ab report`: the arms that served a month, judged on its rides' real durations.

It joins the prediction log with the month's labelled rides (as `monitor --served` does),
takes the candidate arm (canary or shadow: the one seen last, if several) and Production
while the candidate served, and reports per arm its rides, RMSE with a bootstrap 95% CI,
MAE and slices; then the decision of `duration.core.ab_stats`. A shadow's rides pair one to
one with Production's by request and ride. A canary's weight is the one its rows were
served with (the log's `weight`), else the one serving now (`serve.json`). One run in the
`nyc-taxi-duration-ab` experiment per (color, month, candidate version).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from duration.core import ab_stats
from duration.core.gate import GateRule
from duration.core.metrics import compare_slices, scores, slice_table
from duration.core.schema import Color
from duration.data import tlc
from duration.errors import DurationError
from duration.ops import monitor_served
from duration.serving.state import CANDIDATES, Role, read_state
from duration.settings import Settings
from duration.tracking import runs
from duration.tracking.names import AB_EXPERIMENT

KEY = ["request_id", "ride_id"]  # one served ride


@dataclass(frozen=True, kw_only=True)
class ArmResult:
    """One arm's rides of the month, and how well it did on their real durations."""

    version: str
    role: Role
    weight: int | None  # its share of the clients, %; None where nothing recorded it
    rides: int
    rmse: float
    ci_low: float
    ci_high: float
    mae: float


@dataclass(kw_only=True)
class ABReport:
    """What `report` measured and decided."""

    run_id: str
    model_name: str
    month: str
    color: str
    decision: str
    reason: str
    candidate_role: Role
    difference: dict[str, float | bool | None]
    arms: list[ArmResult] = field(default_factory=list)
    slices: list[dict] = field(default_factory=list)
    warning: str | None = None  # the log's files that could not be read, in one line


def _candidate(labelled: pd.DataFrame) -> tuple[Role, str]:
    """(role, version) of the candidate arm seen last in the month's labelled rows."""
    cands = labelled[labelled["arm"].isin([r.value for r in CANDIDATES])]
    if cands.empty:
        raise DurationError(
            "no canary or shadow served these rides: start one (`duration deploy --canary N "
            "--weight W` or `--shadow N`), replay the month, then report"
        )
    last = cands.sort_values("served_at").iloc[-1]
    return Role(last["arm"]), str(last["model_version"])


def _arms(labelled: pd.DataFrame, role: Role, version: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Production's rides and the candidate's: for a shadow, the same rides paired in one
    order; for a canary, Production's while the canary served."""
    cand = labelled[(labelled["arm"] == role.value) & (labelled["model_version"] == version)]
    prod = labelled[labelled["arm"] == Role.production.value]
    if role is Role.shadow:
        both = prod.merge(cand[[*KEY, "prediction"]], on=KEY, suffixes=("", "_candidate"))
        pair = both.assign(prediction=both["prediction_candidate"], model_version=version, arm=role)
        return both.drop(columns="prediction_candidate"), pair.drop(columns="prediction_candidate")
    lo, hi = cand["served_at"].min(), cand["served_at"].max()
    return prod[(prod["served_at"] >= lo) & (prod["served_at"] <= hi)], cand


def canary_weight(settings: Settings, rides: pd.DataFrame, version: str) -> int | None:
    """The weight a canary's rides were served with: the log's (rows logged before it was
    recorded have none), else the weight of the canary of `version` serving now."""
    logged = rides["weight"].dropna() if "weight" in rides else pd.Series([], dtype=float)
    if len(logged):
        return int(logged.iloc[-1])
    state = read_state(settings)
    c = state.candidate if state is not None else None
    if c is not None and c.role is Role.canary and c.version == version:
        return c.weight
    return None


def _arm(rides: pd.DataFrame, role: Role, weight: int | None) -> ArmResult:
    se = (rides["prediction"].to_numpy() - rides["duration"].to_numpy()) ** 2
    ci = ab_stats.rmse_interval(se)
    s = scores(rides["duration"].to_numpy(), rides["prediction"].to_numpy())
    return ArmResult(
        version=str(rides["model_version"].iloc[0]),
        role=role,
        weight=weight,
        rides=len(rides),
        rmse=ci.value,
        ci_low=ci.low,
        ci_high=ci.high,
        mae=s["mae"],
    )


def _check_rides(month: str, prod: pd.DataFrame, cand: pd.DataFrame, role: Role) -> None:
    for what, rides in (("Production", prod), (f"the {role}", cand)):
        if len(rides) < ab_stats.MIN_RIDES:
            raise DurationError(
                f"{what} has {len(rides)} labelled rides of {month} (an arm needs "
                f"{ab_stats.MIN_RIDES}): replay more of the month "
                f"(`duration traffic --month {month}`)"
            )


def measure(settings: Settings, color: Color | str, month: str, rule: GateRule) -> ABReport:
    """Join, split into arms, and decide."""
    j = monitor_served.join(settings, color, month)
    role, version = _candidate(j.labelled)
    prod, cand = _arms(j.labelled, role, version)
    _check_rides(month, prod, cand, role)
    weight = canary_weight(settings, cand, version) if role is Role.canary else 100
    prod_weight = None if weight is None else (100 - weight if role is Role.canary else 100)
    boroughs = tlc.boroughs(settings)
    tables = [slice_table(r, r["prediction"].to_numpy(), boroughs) for r in (prod, cand)]
    slices = compare_slices(*tables)
    se = [(r["prediction"].to_numpy() - r["duration"].to_numpy()) ** 2 for r in (prod, cand)]
    d = ab_stats.decide(se[0], se[1], paired=role is Role.shadow, slices=slices, rule=rule)
    return ABReport(
        run_id="",
        model_name=str(cand["model_name"].iloc[0]),
        month=month,
        color=Color(color).value,
        decision=d.decision,
        reason=d.reason,
        candidate_role=role,
        difference={**asdict(d.difference), "paired": d.paired, "wilcoxon_p": d.wilcoxon_p},
        arms=[_arm(prod, Role.production, prod_weight), _arm(cand, role, weight)],
        slices=slices.to_dict("records"),
        warning=j.warning,
    )


def log(r: ABReport) -> str:
    """The report as the one run of (color, month, candidate version) in the A/B experiment."""
    import mlflow  # deferred: MLflow takes seconds to import

    prod, cand = r.arms
    key = {"month": r.month, "color": r.color, "candidate_version": cand.version}
    tags = {
        "model_name": r.model_name,
        "decision": r.decision,
        "reason": r.reason[:500],
        "role": r.candidate_role.value,
        "production_version": prod.version,
    }
    name = f"ab-{r.month}-v{cand.version}"
    with runs.replace_run(AB_EXPERIMENT, key, name, tags) as run:
        weights = {"candidate_weight": cand.weight, "production_weight": prod.weight}
        mlflow.log_params(
            {**{k: v for k, v in weights.items() if v is not None}, "months": r.month}
        )
        values = {
            f"{a.role.value}_{k}": getattr(a, k)
            for a in r.arms
            for k in ("rides", "rmse", "ci_low", "ci_high", "mae")
        }
        values |= {
            f"difference_{k}": v
            for k, v in r.difference.items()
            if isinstance(v, float) and not math.isnan(v)
        }
        mlflow.log_metrics({k: float(v) for k, v in values.items()})
        with tempfile.TemporaryDirectory() as tmp:
            pd.DataFrame([asdict(a) for a in r.arms]).to_csv(Path(tmp) / "arms.csv", index=False)
            pd.DataFrame(r.slices).to_csv(Path(tmp) / "slices.csv", index=False)
            (Path(tmp) / "report.json").write_text(json.dumps(asdict(r), indent=2, default=str))
            mlflow.log_artifacts(tmp, "ab")
        return str(run.info.run_id)


def report(settings: Settings, color: Color | str, month: str, rule: GateRule) -> ABReport:
    """Measure and decide on `month`, and log the run."""
    r = measure(settings, color, month, rule)
    r.run_id = log(r)
    return r
