"""Benchmark the whole pipeline at yellow scale with the default search (`make bench-scale`).

Three `duration pipeline` runs, each in its own process against its own fresh lean tracking
server, with the default 30-trial search and nothing capped:

1. yellow scale: three months of 3M rides each (resampled from the real green months, as
   `make bench` builds them), from an empty data folder, with the default search budget;
2. green: the course's months, as `make pipeline` runs them;
3. the reference: the yellow search with every trial on every ride (`--budget-rows 0`, no
   baselines), run once and kept in reports/bench-scale-reference.json (delete it to run it
   again; it takes about an hour on 2 cores).

Writes reports/bench-scale.json and reports/bench-scale.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from benchmarks.support import report as reports
from benchmarks.support.report import REPORTS, WORK, stamp
from benchmarks.support.runs import check_memory, run_pipeline, stage_table
from benchmarks.support.sites import YELLOW_MONTHS, yellow_site
from duration.errors import DurationError
from duration.infra.files import write_atomic
from duration.server.tracking_server import temporary

REFERENCE = REPORTS / "bench-scale-reference.json"
TARGETS = {"pipeline_s": 900, "pipeline_peak_rss_mb": 4096, "test_rmse_ratio": 1.01}
GREEN_TARGETS = {"best_val_rmse": 5.30, "pipeline_s": 600}  # today's green figures


def with_server(name: str, args: list[str], env: dict, what: str) -> tuple[dict, float, float]:
    """Run one pipeline against a fresh tracking server of its own (stopped afterwards)."""
    root = WORK / f"mlflow-{name}"
    shutil.rmtree(root, ignore_errors=True)  # a fresh database, as on a new machine
    with temporary(root) as uri:
        env = {**env, "MLFLOW_TRACKING_URI": uri}
        return run_pipeline(args, env, WORK / f"{name}-pipeline.json", what)


def figures(result: dict, seconds: float, rss_mb: float, rows: int, trials: int) -> dict:
    """One run's figures: today's keys, the search's budget and the stage timings."""
    search = result["search"]
    return {
        "rows": rows,
        "trials": trials,
        "pipeline_s": round(seconds, 1),
        "pipeline_peak_rss_mb": round(rss_mb, 1),
        "best_val_rmse": round(result["best_val_rmse"], 4),
        "test_rmse": round(result["test_rmse"], 4),
        "search_s": round(search["wall_s"], 1),
        "budget": search.get("budget", {}),
        "best_params": search["best_params"],
        "timings": result["timings"],
    }


def yellow(site: Path, name: str, extra: list[str], rows: int, trials: int) -> dict:
    """A yellow-scale pipeline from an empty data folder."""
    data_dir = WORK / f"{name}-data"
    shutil.rmtree(data_dir, ignore_errors=True)  # measure the work, not a cache
    env = {"DURATION_TLC_URL": f"file://{site}", "DURATION_DATA_DIR": str(data_dir)}
    months = ["--train", YELLOW_MONTHS[0], "--val", YELLOW_MONTHS[1], "--test", YELLOW_MONTHS[2]]
    args = ["--color", "yellow", *months, "--trials", str(trials), *extra]
    result, seconds, rss = with_server(name, args, env, name)
    shutil.rmtree(data_dir, ignore_errors=True)
    return figures(result, seconds, rss, rows, trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000, help="rides per yellow month")
    parser.add_argument("--trials", type=int, default=30, help="trials of every search")
    parser.add_argument("--skip-green", action="store_true", help="only the yellow runs")
    args = parser.parse_args()
    try:
        check_memory(args.rows, "--rows")
        run(args)
    except DurationError as e:
        sys.exit(f"bench-scale: {e}")


def run(args: argparse.Namespace) -> dict:
    """The yellow-scale run, the green one and the reference; the report, written twice
    (once before the reference, which takes an hour)."""
    site = yellow_site(WORK / "yellow-site", green_months(), args.rows)
    print(f"yellow scale: {args.trials} trials on the default budget", flush=True)
    scale = yellow(site, "yellow", [], args.rows, args.trials)
    report = {"machine": stamp(), "yellow_scale": scale, "targets": TARGETS}
    if not args.skip_green:
        print(f"green: {args.trials} trials", flush=True)
        env = {"DURATION_DATA_DIR": str(WORK / "green-data")}
        months = ["--train", "2021-01", "--val", "2021-02", "--test", "2021-03"]
        result, seconds, rss = with_server(
            "green", [*months, "--trials", str(args.trials)], env, "green"
        )
        report["green"] = figures(result, seconds, rss, 0, args.trials)
        report["green_targets"] = GREEN_TARGETS
    write(report)  # kept even if the reference, which takes an hour, is stopped
    key = {"rows": args.rows, "trials": args.trials}
    reference = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {}
    if {k: reference.get(k) for k in key} != key:
        print(f"reference: every trial on every ride ({args.trials} trials)", flush=True)
        everything = ["--budget-rows", "0", "--baselines", "none"]
        reference = yellow(site, "reference", everything, args.rows, args.trials)
        write_atomic(REFERENCE, json.dumps(reference, indent=2) + "\n")
    report["reference"] = reference
    scale["reference_test_rmse"] = reference["test_rmse"]
    scale["test_rmse_ratio"] = round(scale["test_rmse"] / reference["test_rmse"], 4)
    write(report)
    return report


def green_months() -> list[Path]:
    """The real green months the yellow ones are resampled from (and the zone table)."""
    from duration.data import tlc
    from duration.settings import Settings

    settings = Settings.from_env().but(paths={"data_dir": WORK / "data"})
    try:
        real = [tlc.download(settings, "green", m) for m in YELLOW_MONTHS]
        tlc.download_zones(settings)
    except DurationError as e:
        raise DurationError(
            f"it needs green 2021-01..03 from the TLC ({e}); offline, point DURATION_TLC_URL "
            "at a mirror, e.g. DURATION_TLC_URL=file://$(realpath ../shared/data/tlc) "
            "make bench-scale"
        ) from e
    return real


def write(report: dict) -> None:
    """reports/bench-scale.json and .md, atomically."""
    reports.write("bench-scale", report, markdown(report))


def markdown(report: dict) -> list[str]:
    """The report's tables: the runs against their targets, then each run's stages."""
    runs = {k: report[k] for k in ("yellow_scale", "reference", "green") if k in report}
    m = report.get("machine")
    lines = [f"Measured at {m['commit']} on {m['cores']} cores ({m['measured_at']})."] if m else []
    lines += [
        "| run | trials | pipeline (s) | search (s) | peak RSS (MB) | val RMSE | test RMSE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        lines.append(
            f"| {name} | {r['trials']} | {r['pipeline_s']} | {r['search_s']} | "
            f"{r['pipeline_peak_rss_mb']:.0f} | {r['best_val_rmse']} | {r['test_rmse']} |"
        )
    s = report["yellow_scale"]
    against = (
        f"{s['test_rmse_ratio']} × the reference's {s['reference_test_rmse']} (≤ "
        f"{TARGETS['test_rmse_ratio']})"
        if "reference_test_rmse" in s
        else "(the reference has not run yet)"
    )
    lines += [
        "",
        f"Yellow scale against its targets: pipeline {s['pipeline_s']} s (target ≤ "
        f"{TARGETS['pipeline_s']} s), peak RSS {s['pipeline_peak_rss_mb']:.0f} MB (≤ "
        f"{TARGETS['pipeline_peak_rss_mb']} MB), test RMSE {s['test_rmse']} = {against}.",
    ]
    if "green" in report:
        g = report["green"]
        lines.append(
            f"Green: val RMSE {g['best_val_rmse']} (≤ {GREEN_TARGETS['best_val_rmse']}), "
            f"pipeline {g['pipeline_s']} s (today's: {GREEN_TARGETS['pipeline_s']} s)."
        )
    b = s["budget"]
    if b:
        lines.append(
            f"The search's budget at yellow scale: {report['yellow_scale']['trials']} trials on "
            f"{b['trial_train_rows']:,} of {b['train_rows']:,} rides ({b['trials_s']} s, "
            f"{b['trial_rounds']} rounds), then {len(b['refits'])} refits on every ride "
            f"({b['refit_s']} s, {b['refit_rounds']} rounds)."
        )
    for name, r in runs.items():
        lines += ["", f"Stages of the {name} run:", "", *stage_table(r["timings"], r["pipeline_s"])]
    return lines


if __name__ == "__main__":
    main()
