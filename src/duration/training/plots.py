"""Diagnostic figures, logged as run artifacts.

Each is a `matplotlib.figure.Figure` drawn on its own Agg canvas: nothing here touches
pyplot or the global backend, so importing this module never changes a notebook's plotting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure with one axes, on an Agg canvas."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def predicted_vs_actual(y: np.ndarray, pred: np.ndarray, title: str = "") -> Figure:
    """Scatter of predicted against actual duration (a sample of 20k rides)."""
    rng = np.random.default_rng(0)
    i = rng.choice(len(y), size=min(len(y), 20_000), replace=False)
    fig, ax = _figure(5, 5)
    ax.scatter(y[i], pred[i], s=2, alpha=0.2)
    ax.plot([0, 60], [0, 60], color="black", lw=1, label="perfect")
    ax.set(xlabel="actual duration (min)", ylabel="predicted duration (min)", xlim=(0, 62))
    ax.set_title(title or "Predicted vs actual")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def residuals(y: np.ndarray, pred: np.ndarray, title: str = "") -> Figure:
    """Histogram of residuals (predicted minus actual)."""
    fig, ax = _figure(6, 4)
    counts, edges = np.histogram(pred - y, bins=120, range=(-40, 40))
    ax.stairs(counts, edges, fill=True)  # one path, not 120 bars: the same picture, faster
    ax.set(xlabel="residual: predicted - actual (min)", ylabel="rides")
    ax.set_title(title or "Residual distribution")
    fig.tight_layout()
    return fig


def rmse_by_hour(hours: np.ndarray, y: np.ndarray, pred: np.ndarray, title: str = "") -> Figure:
    """RMSE for each pickup hour, with the ride count on a second axis."""
    df = pd.DataFrame({"hour": hours, "se": (pred - y) ** 2})
    g = df.groupby("hour")["se"].agg(["mean", "size"]).reindex(range(24))
    fig, ax = _figure(7, 4)
    ax.bar(g.index, np.sqrt(g["mean"]), color="tab:blue")
    ax.set(xlabel="pickup hour", ylabel="RMSE (min)", xticks=range(0, 24, 2))
    ax2 = ax.twinx()
    ax2.plot(g.index, g["size"], color="tab:orange", marker=".")
    ax2.set_ylabel("rides", color="tab:orange")
    ax.set_title(title or "RMSE by pickup hour")
    fig.tight_layout()
    return fig


def trials(val_rmse: list[float], title: str = "") -> Figure:
    """Validation RMSE of each trial, with the best so far."""
    x = np.arange(1, len(val_rmse) + 1)
    fig, ax = _figure(7, 4)
    ax.plot(x, val_rmse, "o", label="trial")
    ax.plot(x, np.minimum.accumulate(val_rmse), "-", label="best so far")
    ax.set(xlabel="trial", ylabel="validation RMSE (min)")
    ax.set_title(title or "Validation RMSE by trial")
    ax.legend()
    fig.tight_layout()
    return fig


def history(
    months: list[str], rmse: list[float], drift: list[float], promoted: list[bool]
) -> Figure:
    """RMSE and drift share of Production by month, with the promotions marked."""
    x = np.arange(len(months))
    fig, ax = _figure(max(6, len(months) * 0.6), 4)
    ax.plot(x, rmse, "o-", color="tab:blue", label="Production RMSE")
    ax.set(xticks=x, ylabel="RMSE (min)")
    ax.set_xticklabels(months, rotation=45, ha="right")
    for i in np.flatnonzero(promoted):
        ax.axvline(float(i), color="tab:green", ls="--", lw=1)
    ax2 = ax.twinx()
    ax2.plot(x, drift, "s:", color="tab:orange", label="drift share")
    ax2.set(ylabel="drift share", ylim=(0, 1.05))
    ax.set_title("Monitoring by month (dashed: a promotion)")
    fig.tight_layout()
    return fig


def log_figure(fig: Figure, path: str, run_id: str | None = None) -> None:
    """Log a figure to a run (by id) or to the active run."""
    import mlflow  # deferred: MLflow takes seconds to import

    if run_id is None:
        mlflow.log_figure(fig, path)
    else:
        mlflow.MlflowClient().log_figure(run_id, fig, path)


def log_diagnostics(hours: np.ndarray, y: np.ndarray, pred: np.ndarray, label: str) -> None:
    """Log predicted-vs-actual, residuals and RMSE-by-hour figures to the active run."""
    log_figure(
        predicted_vs_actual(y, pred, f"{label}: predicted vs actual"),
        "plots/predicted_vs_actual.png",
    )
    log_figure(residuals(y, pred, f"{label}: residuals"), "plots/residuals.png")
    log_figure(
        rmse_by_hour(hours, y, pred, f"{label}: RMSE by pickup hour"),
        "plots/rmse_by_hour.png",
    )
