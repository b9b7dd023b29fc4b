"""The model's life on one self-contained page (plotly, its JS inline: it works offline).

Four panels, month by month: the offline and served RMSE (per arm, with its CI) with the
Production version and its changes, and the verdicts and decisions as markers; the
Production version as a step line; a drift heatmap, column by month; the served volume and
p50/p99 latency. The figures are the `Life`'s (`duration.ops.model_life`), drawn as they are;
they are also embedded as JSON (`<script id="life">`) for a reader or a test to check.
`report` first records the served RMSE of months with served rides and none recorded (as
`duration monitor --served` does), then writes the page and logs it as the artifact of a run
in the reports experiment.
"""

from __future__ import annotations

import contextlib
import html
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from duration.errors import DurationError
from duration.infra.files import write_atomic
from duration.ops import monitor_served
from duration.ops.model_life import Life, gather, unmeasured
from duration.settings import Settings
from duration.tracking import runs
from duration.tracking.names import REPORT_EXPERIMENT

TITLE = "The model's life, month by month"
VERDICT_SYMBOLS = {"ok": "circle", "drift": "diamond", "degraded": "x"}


def _rmse_panel(fig: Any, life: Life) -> None:
    import plotly.graph_objects as go  # deferred: plotly loads only to draw

    months = [m.month for m in life.months]
    add = fig.add_trace
    add(
        go.Scatter(
            x=months,
            y=[m.offline_rmse for m in life.months],
            mode="lines+markers",
            name="offline RMSE (monitoring)",
            marker={
                "symbol": [VERDICT_SYMBOLS.get(m.verdict, "circle") for m in life.months],
                "size": 10,
            },
            text=[f"v{m.production_version}: {m.verdict}; {m.decision}" for m in life.months],
            hovertemplate="%{x}: %{y:.3f} min<br>%{text}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    versions = sorted({a.version for m in life.months for a in m.served}, key=int)
    for version in versions:
        rows = [(m.month, a) for m in life.months for a in m.served if a.version == version]
        # the CI where an A/B run has one (a month with no arm split has none: no bar)
        high = [a.ci_high - a.rmse if a.ci_high is not None else 0.0 for _, a in rows]
        low = [a.rmse - a.ci_low if a.ci_low is not None else 0.0 for _, a in rows]
        has_ci = any(a.ci_low is not None for _, a in rows)
        add(
            go.Scatter(
                x=[month for month, _ in rows],
                y=[a.rmse for _, a in rows],
                mode="markers",
                name=f"served RMSE, v{version}",
                text=[f"{a.role}, {a.rides} rides" for _, a in rows],
                error_y=(
                    {
                        "type": "data",
                        "symmetric": False,
                        "array": high,
                        "arrayminus": low,
                    }
                    if has_ci
                    else None
                ),
                hovertemplate="%{x}: %{y:.3f} min (%{text})<extra></extra>",
            ),
            row=1,
            col=1,
        )
    for m in life.months:
        if m.decision:
            label = {"text": m.decision, "showarrow": True, "arrowhead": 2, "ax": 0, "ay": -28}
            fig.add_annotation(x=m.month, y=m.offline_rmse, row=1, col=1, **label)


def _drift_and_traffic(fig: Any, life: Life) -> None:
    import plotly.graph_objects as go  # deferred: plotly loads only to draw

    months = [m.month for m in life.months]
    columns = sorted({c for m in life.months for c in m.drift})
    fig.add_trace(
        go.Heatmap(
            x=months,
            y=columns,
            z=[[m.drift.get(c) for m in life.months] for c in columns],
            colorscale="Reds",
            zmin=0,
            colorbar={"title": "drift", "len": 0.28, "y": 0.4},
            name="drift",
        ),
        row=3,
        col=1,
    )
    fig.add_trace(
        go.Bar(x=months, y=[m.served_rides for m in life.months], name="served rides", opacity=0.5),
        row=4,
        col=1,
    )
    for q in ("p50", "p99"):
        values = [getattr(m, f"{q}_ms") for m in life.months]
        fig.add_trace(
            go.Scatter(x=months, y=values, mode="lines+markers", name=f"{q} latency, ms"),
            row=4,
            col=1,
            secondary_y=True,
        )


def page(life: Life) -> str:
    """The page's HTML."""
    import plotly.graph_objects as go  # deferred: plotly loads only to draw
    from plotly.subplots import make_subplots

    months = [m.month for m in life.months]
    fig = make_subplots(
        rows=4,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        row_heights=[0.34, 0.14, 0.3, 0.22],
        subplot_titles=(
            "RMSE, minutes (marker: verdict ● ok ◆ drift ✕ degraded; label: decision)",
            "Production version",
            "Drift score per column (KS or JS; a column drifts at the threshold)",
            "Served rides and latency, by the rides' month",
        ),
        specs=[[{}], [{}], [{}], [{"secondary_y": True}]],
    )
    _rmse_panel(fig, life)
    versions = [int(m.production_version) for m in life.months if m.production_version.isdigit()]
    fig.add_trace(
        go.Scatter(
            x=months, y=versions, mode="lines+markers", line={"shape": "hv"}, name="Production"
        ),
        row=2,
        col=1,
    )
    _drift_and_traffic(fig, life)
    fig.update_layout(height=1200, title=f"{TITLE}: {life.name}", template="plotly_white")
    body = fig.to_html(full_html=False, include_plotlyjs=True)
    data = json.dumps(asdict(life)).replace("</", "<\\/")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(TITLE)}: {html.escape(life.name)}</title></head><body>"
        f"{body}<script id='life' type='application/json'>{data}</script></body></html>"
    )


def report(settings: Settings, name: str, start: str, end: str, output: Path) -> tuple[Path, str]:
    """Gather the life, write the page to `output` (atomically), and log it as the artifact
    of a run in the reports experiment; the page and the run's id."""
    import mlflow  # deferred: MLflow takes seconds to import

    for month, color in unmeasured(settings, name, start, end).items():
        with contextlib.suppress(DurationError):  # its labels are not published yet
            monitor_served.monitor(settings, color, month)
    life = gather(settings, name, start, end)
    html = page(life)
    write_atomic(output, html)
    key = {"model_name": name, "first_month": start, "last_month": end}
    with runs.replace_run(REPORT_EXPERIMENT, key, f"life-{start}-{end}", {}) as run:
        mlflow.log_metrics({"months": len(life.months)})
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / "model-life.html"
            copy.write_text(html)
            mlflow.log_artifact(str(copy), "report")
        return output, str(run.info.run_id)
