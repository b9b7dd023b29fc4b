"""Benchmark the search backends (`make bench-spark`): local and Spark, green and yellow scale.

Each search is the real `duration tune` command, in its own process, against a fresh lean
tracking server on a free port:

- green 2021-01 -> 2021-02, the default 30-trial search: `--backend local` (xgboost on every
  core) and `--backend spark --parallelism 2` on `local[2]` (one core per trial);
- yellow scale (3M rides a month, resampled from the green months by `scripts/benchmark.py`):
  a few trials of each, capped at 100 boosting rounds.

Writes reports/spark.json and reports/spark.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.support.report import WORK, markdown_table, stamp, write
from benchmarks.support.sites import yellow_site
from duration.server.tracking_server import temporary

BACKENDS = {
    "local": [],
    "spark": ["--backend", "spark", "--parallelism", "2", "--spark-master", "local[2]"],
}


def _duration(*args: str, env: dict) -> None:
    exe = str(Path(sys.executable).with_name("duration"))
    subprocess.run([exe, *args], env=env, check=True, stdout=subprocess.DEVNULL)


def run_search(label: str, backend: str, trials: int, extra: list[str], env: dict) -> dict:
    """One `duration tune` in its own process; its wall time and summary."""
    out = WORK / f"spark-{label}-{backend}.json"
    start = time.perf_counter()
    search = ["--trials", str(trials), "--seed", "42", *extra, *BACKENDS[backend]]
    _duration("tune", *search, "--summary", str(out), env=env)
    wall = time.perf_counter() - start
    s = json.loads(out.read_text())
    row = {
        "data": label,
        "backend": backend,
        "trials": s["completed"],
        "wall_s": round(wall, 1),
        "search_s": round(s["wall_s"], 1),
        "s_per_trial": round(s["seconds_per_trial"], 2),
        "best_val_rmse": round(s["best_val_rmse"], 4),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="green search trials")
    parser.add_argument("--scale-trials", type=int, default=2, help="yellow-scale trials")
    parser.add_argument("--scale-rows", type=int, default=3_000_000)
    args = parser.parse_args()
    mirror = os.environ.get("DURATION_TLC_URL", "")
    if not mirror.startswith("file://"):
        sys.exit("bench-spark: set DURATION_TLC_URL=file://<path>/shared/data/tlc (the mirror)")
    root = WORK / "spark-mlflow"
    shutil.rmtree(root, ignore_errors=True)
    green = WORK / "spark-green"
    rows = []
    with temporary(root) as uri:
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "DURATION_DATA_DIR": str(green)}
        _duration("vectorize", "--train", "2021-01", "--val", "2021-02", env=env)
        for backend in BACKENDS:
            rows.append(run_search("green", backend, args.trials, [], env))
        months = [green / "raw" / f"green_tripdata_{m}.parquet" for m in ("2021-01", "2021-02")]
        site = yellow_site(WORK / "yellow-site", months, args.scale_rows)
        yellow = {**env, "DURATION_TLC_URL": f"file://{site}"}
        yellow["DURATION_DATA_DIR"] = str(WORK / "spark-yellow")
        _duration("vectorize", "--color", "yellow", "--val", "2021-02", env=yellow)
        cap = ["--color", "yellow", "--max-rounds", "100"]
        for backend in BACKENDS:
            rows.append(run_search("yellow-3M", backend, args.scale_trials, cap, yellow))
    m = stamp()
    lines = [f"Measured at {m['commit']} on {m['cores']} cores ({m['measured_at']}).", ""]
    lines += markdown_table(rows)
    write("spark", {"machine": m, "rows": rows}, lines)


if __name__ == "__main__":
    main()
