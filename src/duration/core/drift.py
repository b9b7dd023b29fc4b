"""Drift and data quality of a month against a reference, and the monitoring verdict.

Drift uses scipy's statistics as effect sizes, not p-values (at 50k rides every p-value is
tiny): the two-sample Kolmogorov-Smirnov statistic for numeric columns and the Jensen-Shannon
distance for categorical ones, each compared with a threshold. Evidently, the course's
library, does not import beside pandas 3 (see docs/guides/monitoring.md).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

VERDICTS = ("ok", "drift", "degraded")


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """When a column drifts, and when a month's verdict is `drift` or `degraded`."""

    drift_threshold: float  # a column drifts at this KS / JS score
    drift_share: float  # verdict `drift` from this share of the input columns
    rmse_ratio: float  # verdict `degraded` above this RMSE / the version's test RMSE


def column_drift(ref: pd.Series, cur: pd.Series, categorical: bool) -> float:
    """Drift of one column: Jensen-Shannon distance (base 2, in [0, 1]) of the category
    shares, missing counted as a category; else the KS statistic of the non-missing values."""
    from scipy.spatial.distance import jensenshannon  # deferred: scipy.stats is heavy
    from scipy.stats import ks_2samp

    if categorical:
        a = ref.astype("float64").fillna(-1).value_counts(normalize=True)
        b = cur.astype("float64").fillna(-1).value_counts(normalize=True)
        keys = a.index.union(b.index)
        p, q = a.reindex(keys, fill_value=0), b.reindex(keys, fill_value=0)
        return float(jensenshannon(p.to_numpy(), q.to_numpy(), base=2))
    x, y = ref.dropna().to_numpy(), cur.dropna().to_numpy()
    if len(x) == 0 or len(y) == 0:
        return 0.0 if len(x) == len(y) else 1.0
    return float(ks_2samp(x, y).statistic)


def drift_table(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    threshold: float,
) -> pd.DataFrame:
    """One row per input column: its statistic, score and whether it drifted."""
    rows = []
    for col in numeric + categorical:
        cat = col in categorical
        score = column_drift(ref[col], cur[col], cat)
        stat = "jensen-shannon" if cat else "kolmogorov-smirnov"
        rows.append({"column": col, "statistic": stat, "score": score})
    table = pd.DataFrame(rows)
    table["drifted"] = table["score"] >= threshold
    return table


def data_quality(
    cur: pd.DataFrame, ranges: Mapping[str, tuple[float, float]], zones: Collection[int]
) -> dict[str, float]:
    """Missing share of the inputs, share of rides with a numeric input outside its
    reference range, and share of rides with a zone the reference never had."""
    out_of_range = np.zeros(len(cur), dtype=bool)
    for col, (lo, hi) in ranges.items():
        v = cur[col]
        out_of_range |= (v.notna() & ((v < lo) | (v > hi))).to_numpy()
    seen = set(zones)
    unseen = ~(cur["PULocationID"].isin(seen) & cur["DOLocationID"].isin(seen))
    return {
        "missing_share": float(cur.isna().to_numpy().mean()),
        "out_of_range_share": float(out_of_range.mean()),
        "unseen_zone_share": float(unseen.mean()),
    }


def verdict(rmse_ratio: float, drift_share: float, prediction_drift: float, t: Thresholds) -> str:
    """`degraded` when RMSE passed `t.rmse_ratio` times the version's test RMSE; else `drift`
    when `t.drift_share` of the inputs, or the predictions, drifted; else `ok`."""
    if rmse_ratio > t.rmse_ratio:
        return "degraded"
    if drift_share >= t.drift_share or prediction_drift >= t.drift_threshold:
        return "drift"
    return "ok"
