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
