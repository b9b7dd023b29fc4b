"""Benchmark the project's prepare + vectorize against the course's approach (`make bench`).

Each variant runs in its own process at each size (one real month, then rides resampled
from it with a fixed seed); wall time and peak RSS are measured per process, and the two
outputs are compared entry by entry. Also times one xgboost training. Writes
reports/benchmark.json, reports/benchmark.md and reports/benchmark.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.support.report import REPORTS, WORK, markdown_table, stamp, write
from benchmarks.support.runs import check_memory, run_pipeline, stage_table
from benchmarks.support.sites import YELLOW_MONTHS, resample, rows, yellow_site
from duration.errors import DurationError

COURSE_MB_PER_MROW = 920  # measured peak of the course's approach: 2.75 GB at 3M rows
SCALE_TRIALS, SCALE_ROUNDS = 2, 100


def course_approach(path: Path) -> tuple[Any, Any]:
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


def project_approach(path: Path) -> tuple[Any, Any]:
    """The project's own stage functions, on the course feature set."""
    from duration.core import featurize, vectorizer
    from duration.data.prepare import read_rides

    featurizer = featurize.Featurizer(feature_set="course")
    rides = read_rides(path, columns=featurizer.needs)
    return vectorizer.fit_vectorizer(featurizer.frame(rides))


def worker(variant: str, path: Path, out: Path) -> None:
    """Run one variant in this process; save its matrix and vocabulary; print time and RSS."""
    import pandas  # noqa: F401 - imports are not what is timed
    import scipy.sparse as sp
    import sklearn.feature_extraction  # noqa: F401

    import duration.core.featurize
    import duration.core.vectorizer
    import duration.data.prepare  # noqa: F401
    from duration.infra.resources import peak_rss_mb

    start = time.perf_counter()
    dv, x = (project_approach if variant == "project" else course_approach)(path)
    seconds = time.perf_counter() - start
    rss_mb = peak_rss_mb()
    sp.save_npz(out.with_suffix(".npz"), x.tocsr(), compressed=False)
    out.with_suffix(".names.json").write_text(json.dumps(dv.feature_names_))
    print(json.dumps({"seconds": seconds, "rss_mb": rss_mb, "rows": x.shape[0]}))


def run_worker(variant: str, path: Path, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.benchmark", "--worker", variant, str(path), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise DurationError(
            f"the {variant} run on {path.name} failed: {proc.stderr.strip()[-300:]}"
        )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def identical(a: Path, b: Path) -> bool:
    import scipy.sparse as sp

    from duration.core.vectorizer import csr_identical

    names_a = json.loads(a.with_suffix(".names.json").read_text())
    names_b = json.loads(b.with_suffix(".names.json").read_text())
    return names_a == names_b and csr_identical(
        sp.load_npz(a.with_suffix(".npz")), sp.load_npz(b.with_suffix(".npz"))
    )


def time_xgboost(settings: Any) -> dict:
    from duration.core.metrics import rmse
    from duration.data import matrices
    from duration.training import estimators

    matrices.vectorize(settings, "green", "default", "2021-01", ["2021-02"])
    inp = matrices.load_inputs(settings, "green", "default", "2021-01", "2021-02")
    start = time.perf_counter()
    est = estimators.fit("xgboost", inp.tr, inp.va)
    seconds = time.perf_counter() - start
    score = rmse(inp.va.y, est.predict(inp.va.X))
    return {"seconds": seconds, "val_rmse": score, "best_iteration": int(est.best_iteration)}


def server_figures(root: Path, settings: Any) -> tuple[dict, Any]:
    """Start the lean tracking server: seconds to /health, processes and memory. Returns
    the figures and the server's process (stopped by the caller)."""
    import psutil

    from duration.infra.net import free_port
    from duration.server import tracking_server

    server = tracking_server.Server(
        store=tracking_server.sqlite_store(root / "mlflow.db"),
        artifacts=root / "mlartifacts",
        state=root / "state",
        port=free_port(),
    )
    tracking_server.prepare_store(server, settings)  # once: the start is what is timed
    start = time.perf_counter()
    proc = tracking_server.start(server, settings)
    seconds = time.perf_counter() - start
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    rss = sum(p.memory_info().rss for p in tree) / 2**20
    pss = sum(p.memory_full_info().pss for p in tree) / 2**20
    figures = {
        "url": server.url,
        "start_s": round(seconds, 2),
        "processes": len(tree),
        "rss_mb": round(rss, 1),
        "pss_mb": round(pss, 1),
    }
    return figures, proc


def scale_run(real_months: list[Path], n: int, server_uri: str) -> dict:
    """The whole `duration pipeline` on yellow-sized months, from an empty data folder, in
    one process.

    Every stage runs at full size; only the search is shortened (SCALE_TRIALS trials, boosting
    capped at SCALE_ROUNDS rounds), which bounds the time and not the memory.
    """
    site = yellow_site(WORK / "yellow-site", real_months, n)
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
        "rows": n,
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


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["rows"] for r in results]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("project", "project"), ("course", "course approach")):
        a.plot(sizes, [r[f"{key}_s"] for r in results], "o-", label=label)
        b.plot(sizes, [r[f"{key}_rss_mb"] for r in results], "o-", label=label)
    a.set(xlabel="rides read", ylabel="prepare + vectorize (s)", xscale="log", yscale="log")
    b.set(xlabel="rides read", ylabel="peak RSS (MB)", xscale="log")
    a.set_title("Time")
    b.set_title("Peak memory")
    a.legend()
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def check_sizes(sizes: list[int], scale_rows: int) -> None:
    """Refuse, in one line, sizes this machine has no memory for (before any work)."""
    import psutil

    available_mb = psutil.virtual_memory().available / 2**20
    for n in sizes:
        need = COURSE_MB_PER_MROW * n / 1e6 * 1.3
        if need > available_mb * 0.8:
            raise DurationError(
                f"{n:,} rows need about {need:,.0f} MB for the course's approach, "
                f"but {available_mb:,.0f} MB are available: choose smaller --sizes"
            )
    check_memory(scale_rows, "--scale-rows")


def compare(inputs: list[Path]) -> list[dict]:
    """The project's and the course's prepare + vectorize on each input, side by side."""
    results = []
    for path in inputs:
        p = run_worker("project", path, WORK / f"out-project-{path.stem}")
        c = run_worker("course", path, WORK / f"out-course-{path.stem}")
        same = identical(WORK / f"out-project-{path.stem}", WORK / f"out-course-{path.stem}")
        results.append(
            {
                "input": path.name,
                "rows": rows(path),
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
    return results


def run(args: argparse.Namespace) -> dict:
    """Every measurement of `make bench`, as the report's dict."""
    from duration.data import tlc
    from duration.infra.proc import stop_group
    from duration.settings import Settings

    sizes = [int(s) for s in args.sizes.split(",") if s]
    check_sizes(sizes, args.scale_rows)
    WORK.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env().but(paths={"data_dir": WORK / "data"})
    try:
        real = tlc.download(settings, "green", "2021-01")
    except DurationError as e:
        raise DurationError(
            f"it needs green 2021-01 from the TLC ({e}); offline, point DURATION_TLC_URL at a "
            "mirror, e.g. DURATION_TLC_URL=file://$(realpath ../shared/data/tlc) make bench"
        ) from e
    inputs = [real] + [resample(real, n, WORK / f"green_resampled_{n}.parquet") for n in sizes]
    results = compare(inputs)
    xgb = time_xgboost(settings)
    shutil.rmtree(WORK / "mlflow", ignore_errors=True)  # a fresh database, as on a new machine
    tracker, proc = server_figures(WORK / "mlflow", settings)
    try:
        months = [real] + [tlc.download(settings, "green", m) for m in YELLOW_MONTHS[1:]]
        scale = scale_run(months, args.scale_rows, tracker["url"])
    finally:
        stop_group(proc.pid)
    return {
        "machine": stamp(),
        "sizes": results,
        "xgboost_train": xgb,
        "tracking_server": tracker,
        "yellow_scale": scale,
    }


def markdown(report: dict) -> list[str]:
    """The report's tables and figures, as markdown lines."""
    results, xgb = report["sizes"], report["xgboost_train"]
    tracker, scale, m = report["tracking_server"], report["yellow_scale"], report["machine"]
    cols = [
        *("rows", "project_s", "course_s", "speedup"),
        *("project_rss_mb", "course_rss_mb", "memory_ratio", "identical"),
    ]
    lines = [
        f"Measured at {m['commit']} on {m['cores']} cores, {m['memory_gb']} GB "
        f"({m['measured_at']}).",
        "",
        *markdown_table(results, cols),
    ]
    lines += [
        "",
        f"One xgboost training (default features, green 2021-01 → 2021-02, early stopping): "
        f"{xgb['seconds']:.1f} s, val RMSE {xgb['val_rmse']:.4f}, "
        f"best iteration {xgb['best_iteration']}.",
        f"Tracking server: /health after {tracker['start_s']} s, {tracker['processes']} "
        f"processes, {tracker['rss_mb']} MB RSS ({tracker['pss_mb']} MB PSS).",
        f"Whole `duration pipeline` on yellow-scale months ({scale['rows']:,} rides each, "
        f"tpep_ columns; {scale['trials']} trials, at most {scale['max_rounds']} rounds): "
        f"{scale['pipeline_s']} s at {scale['pipeline_peak_rss_mb']} MB peak RSS "
        f"(limit 4096 MB); best val RMSE {scale['best_val_rmse']}, "
        f"test RMSE {scale['test_rmse']}.",
        "",
        *stage_table(scale["timings"], scale["pipeline_s"]),
    ]
    return lines


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
    try:
        report = run(args)
    except DurationError as e:
        sys.exit(f"benchmark: {e}")
    write("benchmark", report, markdown(report))
    plot(report["sizes"], REPORTS / "benchmark.png")


if __name__ == "__main__":
    main()
