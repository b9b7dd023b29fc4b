"""Benchmark runs: the real `duration` command in its own process (its wall time and its
own peak RSS), the memory a run needs, and the stage table of a report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from duration.errors import DurationError

PIPELINE_MB_PER_MROW = 1170  # measured peak of the whole pipeline: 3.5 GB at 3M rides a month


def run_pipeline(args: list[str], env: dict, summary: Path, what: str) -> tuple[dict, float, float]:
    """`duration pipeline ARGS` in its own process: its summary, wall seconds and peak RSS (MB)."""
    cmd = [str(Path(sys.executable).with_name("duration")), "pipeline", *args]
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, "--summary", str(summary)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
        raise DurationError(f"the {what} pipeline failed: {err!r}")
    return json.loads(summary.read_text()), time.perf_counter() - start, usage.ru_maxrss / 1024


def check_memory(n: int, flag: str) -> None:
    """Refuse, in one line, a yellow-scale pipeline this machine has no memory for."""
    available_mb = psutil.virtual_memory().available / 2**20
    need = PIPELINE_MB_PER_MROW * n / 1e6 * 1.2
    if need > available_mb * 0.8:
        raise DurationError(
            f"a {n:,}-ride pipeline needs about {need:,.0f} MB, but {available_mb:,.0f} MB are "
            f"available: choose a smaller {flag}"
        )


def stage_table(timings: dict, total_s: float) -> list[str]:
    """Markdown rows: each pipeline stage's seconds, its share of the whole, its peak RSS."""
    lines = ["| stage | seconds | share | peak RSS (MB) |", "|---|---|---|---|"]
    for name, t in timings.items():
        share = t["seconds"] / total_s if total_s else 0.0
        lines.append(f"| {name} | {t['seconds']:.1f} | {share:.0%} | {t['peak_rss_mb']:.0f} |")
    rest = total_s - sum(t["seconds"] for t in timings.values())
    lines.append(
        f"| (start-up, connecting, outside the stages) | {rest:.1f} | "
        f"{rest / total_s if total_s else 0:.0%} | |"
    )
    return lines
