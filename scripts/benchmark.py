"""Benchmark the project's prepare + vectorize against the course's approach (`make bench`).

Each variant runs in its own process at each size (one real month, then rides resampled
from it with a fixed seed); wall time and peak RSS are measured per process, and the two
outputs are compared entry by entry. Also times one xgboost training. Writes
reports/benchmark.json, reports/benchmark.md and reports/benchmark.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
WORK = REPORTS / "bench-data"
COURSE_MB_PER_MROW = 920  # measured peak of the course's approach: 2.75 GB at 3M rows
PIPELINE_MB_PER_MROW = 1170  # measured peak of the whole pipeline: 3.5 GB at 3M rides a month


def course_approach(path: Path):
    """The course notebook's read_dataframe + DictVectorizer, written as the course does."""
    import pandas as pd
    from sklearn.feature_extraction import DictVectorizer

    df = pd.read_parquet(path)
    df["duration"] = df.lpep_dropoff_datetime - df.lpep_pickup_datetime
    df.duration = df.duration.apply(lambda td: td.total_seconds() / 60)
    df = df[(df.duration >= 1) & (df.duration <= 60)]
    categorical = ["PULocationID", "DOLocationID"]
    df[categorical] = df[categorical].astype(str)
    df["PU_DO"] = df["PULocationID"] + "_" + df["DOLocationID"]
    dicts = df[["PU_DO", "trip_distance"]].to_dict(orient="records")
    dv = DictVectorizer()
    return dv, dv.fit_transform(dicts)


def project_approach(path: Path):
    """The project's own stage functions, on the course feature set."""
    from duration import data, featurize, vectorizer

    featurizer = featurize.Featurizer("course")
    rides = data.read_rides(path, columns=featurizer.needs)
    return vectorizer.fit_vectorizer(featurizer.frame(rides))


def worker(variant: str, path: Path, out: Path) -> None:
    """Run one variant in this process; save its matrix and vocabulary; print time and RSS."""
    import pandas  # noqa: F401 - imports are not what is timed
    import scipy.sparse as sp
    import sklearn.feature_extraction  # noqa: F401

    import duration.data
    import duration.featurize
    import duration.vectorizer  # noqa: F401
    from duration.resources import peak_rss_mb

    start = time.perf_counter()
    dv, x = (project_approach if variant == "project" else course_approach)(path)
    seconds = time.perf_counter() - start
    rss_mb = peak_rss_mb()
    sp.save_npz(out.with_suffix(".npz"), x.tocsr(), compressed=False)
    out.with_suffix(".names.json").write_text(json.dumps(dv.feature_names_))
    print(json.dumps({"seconds": seconds, "rss_mb": rss_mb, "rows": x.shape[0]}))


def run_worker(variant: str, path: Path, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", variant, str(path), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(
            f"benchmark: the {variant} run on {path.name} failed: {proc.stderr.strip()[-300:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def identical(a: Path, b: Path) -> bool:
    import scipy.sparse as sp

    from duration.vectorizer import csr_identical

    names_a = json.loads(a.with_suffix(".names.json").read_text())
    names_b = json.loads(b.with_suffix(".names.json").read_text())
    return names_a == names_b and csr_identical(
        sp.load_npz(a.with_suffix(".npz")), sp.load_npz(b.with_suffix(".npz"))
    )


def resample(src: Path, rows: int, dest: Path, seed: int = 42, yellow: bool = False) -> Path:
    """Rides resampled (with replacement, fixed seed) from a real month, in TLC columns.

    `yellow` renames the lpep_ columns to tpep_ and drops the green-only ones.
    """
    import numpy as np
    import pandas as pd

    from duration.files import atomic_path

    if dest.exists() and pq_rows(dest) == rows:
        return dest
    df = pd.read_parquet(src)
    if yellow:
        df = df.drop(columns=["trip_type", "ehail_fee"])
        df = df.rename(columns=lambda c: c.replace("lpep_", "tpep_"))
    idx = np.random.default_rng(seed).integers(0, len(df), rows)
    with atomic_path(dest) as tmp:
        df.iloc[idx].reset_index(drop=True).to_parquet(tmp)
    return dest


def time_xgboost(settings) -> dict:
    from duration import estimators, matrices, tracking

    matrices.vectorize(settings, "green", "default", "2021-01", ["2021-02"])
    inp = matrices.load_inputs(settings, "green", "default", "2021-01", "2021-02")
    start = time.perf_counter()
    est = estimators.fit("xgboost", inp.tr, inp.va)
    seconds = time.perf_counter() - start
    rmse = tracking.scores(inp.va.y, est.predict(inp.va.X))["rmse"]
    return {"seconds": seconds, "val_rmse": rmse, "best_iteration": int(est.best_iteration)}


def server_figures(root: Path) -> dict:
    """Start the lean tracking server: seconds to /health, processes and memory."""
    import psutil

    from duration import server
    from duration.serve import free_port

    port = free_port()
    server.prepare_store(root / "mlflow.db", root / "mlartifacts", root / "state")  # once
    start = time.perf_counter()
    proc = server.start_server(root / "mlflow.db", root / "mlartifacts", port, root / "state")
    seconds = time.perf_counter() - start
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    rss = sum(p.memory_info().rss for p in tree) / 2**20
    pss = sum(p.memory_full_info().pss for p in tree) / 2**20
    return {
        "port": port,
        "pid": proc.pid,
        "start_s": round(seconds, 2),
        "processes": len(tree),
        "rss_mb": round(rss, 1),
        "pss_mb": round(pss, 1),
    }


SCALE_TRIALS, SCALE_ROUNDS = 2, 100


YELLOW_MONTHS = ["2021-01", "2021-02", "2021-03"]


def yellow_site(real_months: list[Path], rows: int) -> Path:
    """A TLC-like site of yellow-sized months (`rows` rides each, resampled from the real
    green months and renamed to tpep_ columns) with the zone table; built once, then kept."""
    site = WORK / "yellow-site"
    (site / "trip-data").mkdir(parents=True, exist_ok=True)
    (site / "misc").mkdir(exist_ok=True)
    for i, (src, month) in enumerate(zip(real_months, YELLOW_MONTHS, strict=True)):
        dest = site / "trip-data" / f"yellow_tripdata_{month}.parquet"
        resample(src, rows, dest, seed=42 + i, yellow=True)
    zones = real_months[0].with_name("taxi_zone_lookup.csv")
    (site / "misc" / "taxi_zone_lookup.csv").write_bytes(zones.read_bytes())
    return site


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
        sys.exit(f"benchmark: the {what} pipeline failed: {proc.stderr.read()[-300:]!r}")
    return json.loads(summary.read_text()), time.perf_counter() - start, usage.ru_maxrss / 1024


def scale_run(real_months: list[Path], rows: int, server_uri: str) -> dict:
    """The whole `duration pipeline` on yellow-sized months, from an empty data folder, in
    one process.

    Every stage runs at full size; only the search is shortened (SCALE_TRIALS trials, boosting
    capped at SCALE_ROUNDS rounds), which bounds the time and not the memory.
    """
    import shutil

    site = yellow_site(real_months, rows)
    env = {
        "DURATION_TLC_URL": f"file://{site}",
        "DURATION_DATA_DIR": str(WORK / "yellow-data"),
        "MLFLOW_TRACKING_URI": server_uri,
    }
    args = [
        *("--color", "yellow", "--train", YELLOW_MONTHS[0], "--val", YELLOW_MONTHS[1]),
        *("--test", YELLOW_MONTHS[2]),
        *("--trials", str(SCALE_TRIALS), "--max-rounds", str(SCALE_ROUNDS)),
    ]
    shutil.rmtree(WORK / "yellow-data", ignore_errors=True)  # measure the work, not a cache
    result, seconds, rss_mb = run_pipeline(args, env, WORK / "yellow-pipeline.json", "yellow")
    return {
        "rows": rows,
        "trials": SCALE_TRIALS,
        "max_rounds": SCALE_ROUNDS,
        "pipeline_s": round(seconds, 1),
        "pipeline_peak_rss_mb": round(rss_mb, 1),
        "baselines": {
            f"{b['model']}/{b['features']}": round(b["val_rmse"], 4) for b in result["baselines"]
        },
        "best_val_rmse": round(result["best_val_rmse"], 4),
        "test_rmse": round(result["test_rmse"], 4),
        "timings": result["timings"],  # stage -> seconds and peak RSS, from the pipeline
    }


def check_memory(rows: int, flag: str) -> None:
    """Refuse, in one line, a yellow-scale pipeline this machine has no memory for."""
    import psutil

    available_mb = psutil.virtual_memory().available / 2**20
    need = PIPELINE_MB_PER_MROW * rows / 1e6 * 1.2
    if need > available_mb * 0.8:
        sys.exit(
            f"benchmark: a {rows:,}-ride pipeline needs about {need:,.0f} MB, but "
            f"{available_mb:,.0f} MB are available: choose a smaller {flag}"
        )


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r["rows"] for r in results]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("project", "project"), ("course", "course approach")):
        a.plot(rows, [r[f"{key}_s"] for r in results], "o-", label=label)
        b.plot(rows, [r[f"{key}_rss_mb"] for r in results], "o-", label=label)
    a.set(xlabel="rides read", ylabel="prepare + vectorize (s)", xscale="log", yscale="log")
    b.set(xlabel="rides read", ylabel="peak RSS (MB)", xscale="log")
    a.set_title("Time")
    b.set_title("Peak memory")
    a.legend()
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,3000000", help="resampled sizes, rows")
    parser.add_argument("--scale-rows", type=int, default=3_000_000, help="yellow-scale month")
    parser.add_argument(
        "--worker", nargs=3, metavar=("VARIANT", "PATH", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        variant, path, out = args.worker
        return worker(variant, Path(path), Path(out))

    import psutil

    from duration import data
    from duration.config import Settings
    from duration.errors import DurationError

    sizes = [int(s) for s in args.sizes.split(",") if s]
    available_mb = psutil.virtual_memory().available / 2**20
    for n in sizes:
        need = COURSE_MB_PER_MROW * n / 1e6 * 1.3
        if need > available_mb * 0.8:
            sys.exit(
                f"benchmark: {n:,} rows need about {need:,.0f} MB for the course's approach, "
                f"but {available_mb:,.0f} MB are available: choose smaller --sizes"
            )
    check_memory(args.scale_rows, "--scale-rows")
    WORK.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env(data_dir=WORK / "data")
    try:
        real = data.download(settings, "green", "2021-01")
    except DurationError as e:
        sys.exit(
            f"benchmark: it needs green 2021-01 from the TLC ({e}); offline, point "
            "DURATION_TLC_URL at a mirror, e.g. DURATION_TLC_URL=file://$(realpath "
            "../shared/data/tlc) make bench"
        )
    inputs = [real] + [resample(real, n, WORK / f"green_resampled_{n}.parquet") for n in sizes]
    results = []
    for path in inputs:
        p = run_worker("project", path, WORK / f"out-project-{path.stem}")
        c = run_worker("course", path, WORK / f"out-course-{path.stem}")
        same = identical(WORK / f"out-project-{path.stem}", WORK / f"out-course-{path.stem}")

        results.append(
            {
                "input": path.name,
                "rows": pq_rows(path),
                "rides_kept": p["rows"],
                "project_s": round(p["seconds"], 3),
                "course_s": round(c["seconds"], 3),
                "speedup": round(c["seconds"] / p["seconds"], 1),
                "project_rss_mb": round(p["rss_mb"], 1),
                "course_rss_mb": round(c["rss_mb"], 1),
                "memory_ratio": round(p["rss_mb"] / c["rss_mb"], 3),
                "identical": same,
            }
        )
        print(json.dumps(results[-1]), flush=True)
    xgb = time_xgboost(settings)
    import shutil

    from duration import server

    shutil.rmtree(WORK / "mlflow", ignore_errors=True)  # a fresh database, as on a new machine
    tracker = server_figures(WORK / "mlflow")
    try:
        real_months = [real] + [data.download(settings, "green", m) for m in ("2021-02", "2021-03")]
        scale = scale_run(real_months, args.scale_rows, f"http://127.0.0.1:{tracker['port']}")
    finally:
        server.stop_pid(tracker.pop("pid"))
    report = {
        "machine": {
            "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        },
        "sizes": results,
        "xgboost_train": xgb,
        "tracking_server": tracker,
        "yellow_scale": scale,
    }
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "benchmark.json").write_text(json.dumps(report, indent=2) + "\n")
    cols = [
        "rows",
        "project_s",
        "course_s",
        "speedup",
        "project_rss_mb",
        "course_rss_mb",
        "memory_ratio",
        "identical",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in results]
    lines.append("")
    lines.append(
        f"One xgboost training (default features, green 2021-01 → 2021-02, early stopping): "
        f"{xgb['seconds']:.1f} s, val RMSE {xgb['val_rmse']:.4f}, "
        f"best iteration {xgb['best_iteration']}."
    )
    lines.append(
        f"Tracking server: /health after {tracker['start_s']} s, {tracker['processes']} processes, "
        f"{tracker['rss_mb']} MB RSS ({tracker['pss_mb']} MB PSS)."
    )
    lines.append(
        f"Whole `duration pipeline` on yellow-scale months ({scale['rows']:,} rides each, "
        f"tpep_ columns; {scale['trials']} trials, at most {scale['max_rounds']} rounds): "
        f"{scale['pipeline_s']} s at {scale['pipeline_peak_rss_mb']} MB peak RSS "
        f"(limit 4096 MB); best val RMSE {scale['best_val_rmse']}, "
        f"test RMSE {scale['test_rmse']}."
    )
    lines += ["", *stage_table(scale["timings"], scale["pipeline_s"])]
    (REPORTS / "benchmark.md").write_text("\n".join(lines) + "\n")
    plot(results, REPORTS / "benchmark.png")
    print("\n".join(lines))


def stage_table(timings: dict, total_s: float) -> list[str]:
    """Markdown rows: each pipeline stage's seconds, its share of the whole, its peak RSS."""
    lines = ["| stage | seconds | share | peak RSS (MB) |", "|---|---|---|---|"]
    for name, t in timings.items():
        share = t["seconds"] / total_s if total_s else 0.0
        lines.append(f"| {name} | {t['seconds']:.1f} | {share:.0%} | {t['peak_rss_mb']:.0f} |")
    rest = total_s - sum(t["seconds"] for t in timings.values())
    lines.append(f"| (start-up, connecting, outside the stages) | {rest:.1f} | "
                 f"{rest / total_s if total_s else 0:.0%} | |")  # fmt: skip
    return lines


if __name__ == "__main__":
    main()
