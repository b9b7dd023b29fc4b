"""`make bench` refuses sizes that cannot fit in memory before doing any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--sizes", "100000000", "choose smaller --sizes"),
        ("--scale-rows", "100000000", "choose a smaller --scale-rows"),
    ],
)
def test_sizes_that_do_not_fit_are_refused_with_the_estimate(flag, value, needle):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), flag, value], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "MB" in lines[0], proc.stderr


def test_the_stage_table_adds_up_to_the_whole_run():
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    timings = {
        "prepare": {"seconds": 30.0, "peak_rss_mb": 900.0},
        "search": {"seconds": 60.0, "peak_rss_mb": 3100.4},
    }
    lines = bench.stage_table(timings, 100.0)
    assert lines[2] == "| prepare | 30.0 | 30% | 900 |"
    assert lines[3] == "| search | 60.0 | 60% | 3100 |"
    assert lines[4].startswith("| (start-up, connecting, outside the stages) | 10.0 | 10% |")
