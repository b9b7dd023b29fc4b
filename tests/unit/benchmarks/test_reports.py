"""The benchmarks refuse sizes that cannot fit in memory before any work, and their reports
add up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks import bench_scale
from tests.helpers import ROOT


def benchmark(name: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m benchmarks.NAME ARGS` from the repository's root, as `make` runs it."""
    cmd = [sys.executable, "-m", f"benchmarks.{name}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--sizes", "100000000", "choose smaller --sizes"),
        ("--scale-rows", "100000000", "choose a smaller --scale-rows"),
    ],
)
def test_sizes_that_do_not_fit_are_refused_with_the_estimate(flag, value, needle):
    proc = benchmark("benchmark", flag, value)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "MB" in lines[0], proc.stderr


def test_the_stage_table_adds_up_to_the_whole_run():
    from benchmarks.support.runs import stage_table

    timings = {
        "prepare": {"seconds": 30.0, "peak_rss_mb": 900.0},
        "search": {"seconds": 60.0, "peak_rss_mb": 3100.4},
    }
    lines = stage_table(timings, 100.0)
    assert lines[2] == "| prepare | 30.0 | 30% | 900 |"
    assert lines[3] == "| search | 60.0 | 60% | 3100 |"
    assert lines[4].startswith("| (start-up, connecting, outside the stages) | 10.0 | 10% |")


def test_bench_scale_refuses_rows_that_do_not_fit():
    proc = benchmark("bench_scale", "--rows", "100000000")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "choose a smaller --rows" in lines[0], proc.stderr


def test_the_bench_scale_report_compares_each_run_with_its_target():
    stages = {"search": {"seconds": 500.0, "peak_rss_mb": 3000.0}}
    run = {
        "trials": 30,
        "pipeline_s": 700.0,
        "search_s": 500.0,
        "pipeline_peak_rss_mb": 3300.2,
        "best_val_rmse": 6.4,
        "test_rmse": 6.5,
        "timings": stages,
        "budget": {},
    }
    budget = {
        "trial_train_rows": 300_000,
        "train_rows": 2_900_000,
        "trials_s": 300.0,
        "trial_rounds": 4000,
        "refits": [{}, {}, {}],
        "refit_s": 150.0,
        "refit_rounds": 300,
    }
    scale = {**run, "budget": budget, "reference_test_rmse": 6.45, "test_rmse_ratio": 1.0078}
    report = {
        "yellow_scale": scale,
        "reference": {**run, "pipeline_s": 4000.0, "search_s": 3900.0, "test_rmse": 6.45},
        "green": {**run, "pipeline_s": 550.0, "best_val_rmse": 5.28},
    }
    lines = bench_scale.markdown(report)
    assert lines[2] == "| yellow_scale | 30 | 700.0 | 500.0 | 3300 | 6.4 | 6.5 |"
    assert lines[3].startswith("| reference | 30 | 4000.0 | 3900.0 |")
    text = "\n".join(lines)
    assert "pipeline 700.0 s (target ≤ 900 s)" in text
    assert "test RMSE 6.5 = 1.0078 × the reference's 6.45 (≤ 1.01)" in text
    del report["reference"], report["yellow_scale"]["reference_test_rmse"]
    pending = "\n".join(bench_scale.markdown(report))
    assert "test RMSE 6.5 = (the reference has not run yet)" in pending
    assert "Green: val RMSE 5.28 (≤ 5.3), pipeline 550.0 s" in text
    assert "30 trials on 300,000 of 2,900,000 rides (300.0 s, 4000 rounds), then 3 refits" in text
    assert text.count("| search | 500.0 |") == 3  # one stage table per run
