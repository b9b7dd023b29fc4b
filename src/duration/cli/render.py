"""How commands report: tables (rich), and the pipeline's report."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from duration.tracking.experiments import ui_links
from duration.tracking.names import EXPERIMENT, SEARCH_EXPERIMENT

if TYPE_CHECKING:
    from duration.ops.pipeline import PipelineResult


def table(rows: Sequence[Mapping[str, Any] | Any], cols: list[str]) -> str:
    """`rows` (dicts, or dataclasses) as an aligned text table of `cols` (floats to 4
    decimals)."""

    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else "" if v is None else str(v)

    rows = [asdict(r) if is_dataclass(r) and not isinstance(r, type) else r for r in rows]

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style=None)
    for c in cols:
        t.add_column(c, no_wrap=True)
    for r in rows:
        t.add_row(*(cell(r.get(c, "")) for c in cols))
    out = io.StringIO()
    Console(file=out, width=1000, color_system=None, highlight=False).print(t)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


def links(uri: str, name: str) -> list[str]:
    """The UI's pages for the training runs, the search and the registered model."""
    return ui_links(uri, EXPERIMENT) + ui_links(uri, SEARCH_EXPERIMENT, name)


def budget_line(budget: dict) -> str:
    """How a search under the budget spent it ('' when its trials fit on every ride)."""
    if not budget.get("sampled"):
        return ""
    return (
        f"budget: the trials fit on {budget['trial_train_rows']:,} of {budget['train_rows']:,} "
        f"rides ({budget['trials_s']:.0f} s); the best {len(budget['refits'])} were refit on "
        f"every ride ({budget['refit_s']:.0f} s), and only those may be registered"
    )


def timing_rows(timings: dict) -> list[dict]:
    """The pipeline's stages: seconds and peak RSS (MB) of each, in the order they ran."""
    return [
        {"stage": name, "seconds": f"{t['seconds']:.1f}", "peak_rss_mb": f"{t['peak_rss_mb']:.0f}"}
        for name, t in timings.items()
    ]


def pipeline_rows(r: PipelineResult) -> list[dict[str, Any]]:
    """The pipeline's table: each baseline, the search's best and the registered version."""
    rows = [
        {
            "step": f"baseline {b['model']}",
            "features": b["features"],
            "val_rmse": b["val_rmse"],
            "run": b["run_id"],
        }
        for b in r.baselines
    ]
    refits = len(r.search.get("budget", {}).get("refits", []))
    rows.append(
        {
            "step": f"search best of {r.search['completed']}"
            + (f" (then {refits} refits)" if refits else ""),
            "features": r.search["features"],
            "val_rmse": r.search["best_val_rmse"],
            "run": r.search["best_run_id"],
        }
    )
    if r.registered:
        out = r.summary()
        rows.append(
            {
                "step": f"registered v{out['model_version']} ({out['stage']})",
                "features": r.search["features"],
                "val_rmse": r.registered["val_rmse"],
                "test_rmse": r.registered["test_rmse"],
                "run": r.registered["run_id"],
            }
        )
    return rows


def report_pipeline(r: PipelineResult, uri: str, name: str) -> None:
    """The pipeline's tables, its decision, how its search spent the budget and UI links."""
    typer.echo(table(pipeline_rows(r), ["step", "features", "val_rmse", "test_rmse", "run"]))
    if r.stopped:
        typer.echo(
            f"pipeline stopped during the search ({r.search['stopped']}): nothing was registered",
            err=True,
        )
        raise typer.Exit(130 if r.search["stopped"] == "interrupted" else 1)
    typer.echo(r.decision["reason"])
    if line := budget_line(r.search.get("budget", {})):
        typer.echo(line)
    typer.echo(table(timing_rows(r.timings), ["stage", "seconds", "peak_rss_mb"]))
    typer.echo(f"pipeline took {r.wall_s:.0f} s (run {r.run_id}). In the MLflow UI:")
    for link in links(uri, name):
        typer.echo(f"  {link}")
    for step in r.deployment:
        if step["problem"]:
            typer.echo(
                f"the promotion was not deployed ({step['problem']}): the old version still "
                "serves, and the alias stays on the new one",
                err=True,
            )
            raise typer.Exit(1)
        typer.echo(f"serving follows the registry: {step['said']}")
