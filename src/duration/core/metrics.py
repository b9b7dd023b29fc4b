"""How a model is scored: RMSE and MAE in minutes, overall and by slice (pickup borough,
pickup hour band, distance band)."""

from __future__ import annotations

import numpy as np
import pandas as pd

HOUR_BANDS = ([0, 6, 10, 16, 20, 24], ["00-06", "06-10", "10-16", "16-20", "20-24"])
DISTANCE_BANDS = ([-np.inf, 1, 3, 7, np.inf], ["<1 mi", "1-3 mi", "3-7 mi", "7+ mi"])


def scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """RMSE and MAE in minutes."""
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error  # deferred: ~1 s

    return {
        "rmse": float(root_mean_squared_error(y, pred)),
        "mae": float(mean_absolute_error(y, pred)),
    }


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    """RMSE in minutes."""
    return scores(y, pred)["rmse"]


def slice_table(rides: pd.DataFrame, pred: np.ndarray, boroughs: dict[int, str]) -> pd.DataFrame:
    """RMSE and MAE by pickup borough, pickup hour band and distance band."""
    y = rides["duration"].to_numpy()
    keys = {
        "pickup_borough": rides["PULocationID"].map(boroughs).fillna("Unknown"),
        "hour_band": pd.cut(
            pd.to_datetime(rides["pickup_datetime"]).dt.hour,
            HOUR_BANDS[0],
            right=False,
            labels=HOUR_BANDS[1],
        ),
        "distance_band": pd.cut(
            rides["trip_distance"], DISTANCE_BANDS[0], labels=DISTANCE_BANDS[1]
        ),
    }
    err = pd.DataFrame({"se": (pred - y) ** 2, "ae": np.abs(pred - y)})
    rows = []
    for by, key in keys.items():
        g = err.groupby(np.asarray(key, dtype=object), sort=True)
        for name, part in g:
            rows.append(
                {
                    "slice_by": by,
                    "slice": str(name),
                    "rides": len(part),
                    "rmse": float(np.sqrt(part["se"].mean())),
                    "mae": float(part["ae"].mean()),
                }
            )
    return pd.DataFrame(rows)


def compare_slices(champion: pd.DataFrame, challenger: pd.DataFrame) -> pd.DataFrame:
    """Two slice tables of the same rides side by side, with the challenger's RMSE change."""
    keys = ["slice_by", "slice"]
    a = champion.set_index(keys)[["rides", "rmse"]].rename(columns={"rmse": "rmse_champion"})
    b = challenger.set_index(keys)[["rmse"]].rename(columns={"rmse": "rmse_challenger"})
    out = a.join(b).reset_index()
    out["change"] = out["rmse_challenger"] / out["rmse_champion"] - 1
    return out
