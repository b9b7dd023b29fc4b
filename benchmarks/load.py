"""Load test (`make load`): many clients logging at once to a SQLite- and a PostgreSQL-backed
tracking server. Where does each backend error, or pass 5 s at p95?

For each backend it starts its own server (and, for PostgreSQL, its own cluster through
`duration db start`) on free loopback ports, in a temporary home. At each client count, N
processes start together; each creates RUNS runs and logs, per run, PARAMS params and
METRICS metrics of STEPS steps in batches (`log_batch`), then ends it FINISHED. Per run it
times create -> log -> end. Afterwards it reads every run back and checks that every logged
value is on the server (nothing lost). A backend stops climbing once it errors or its p95
passes 5 s; the whole test is bounded in client count and time.

Writes reports/load.json and reports/load.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.support.report import REPORTS, stamp, write
from duration.infra.net import free_port
from duration.server import home as server_home
from duration.server import users
from duration.settings import Postgres, Settings
from duration.tracking.client import configure

P95_LIMIT_S = 5.0


def client(uri: str, experiment_id: str, runs: int, shape: dict, ready, go, out) -> None:
    """One client process: create `runs` runs, log in batches, end them; report timings."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    params = [Param(f"p{i}", str(i)) for i in range(shape["params"])]
    result = {"latencies": [], "errors": [], "run_ids": []}
    ready.put(os.getpid())
    go.wait()
    for _ in range(runs):
        start = time.perf_counter()
        try:
            run = c.create_run(experiment_id)
            now = int(time.time() * 1000)
            metrics = [
                Metric(f"m{k}", float(k * 1000 + step), now, step)
                for k in range(shape["metrics"])
                for step in range(shape["steps"])
            ]
            for i in range(0, len(metrics), 1000):  # MLflow takes <= 1000 metrics a batch
                batch_params = params if i == 0 else []
                c.log_batch(run.info.run_id, metrics=metrics[i : i + 1000], params=batch_params)
            c.set_terminated(run.info.run_id, "FINISHED")
            result["run_ids"].append(run.info.run_id)
            result["latencies"].append(time.perf_counter() - start)
        except Exception as e:  # noqa: BLE001 - counted and reported, the load goes on
            result["errors"].append(f"{type(e).__name__}: {' '.join(str(e).split())[:160]}")
    out.put(result)


def verify(uri: str, run_ids: list[str], shape: dict) -> int:
    """How many runs miss a logged value (params, last metric values, one full history)."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    lost = 0
    last = shape["steps"] - 1
    for run_id in run_ids:
        run = c.get_run(run_id)
        ok = (
            run.info.status == "FINISHED"
            and run.data.params == {f"p{i}": str(i) for i in range(shape["params"])}
            and run.data.metrics
            == {f"m{k}": float(k * 1000 + last) for k in range(shape["metrics"])}
            and len(c.get_metric_history(run_id, "m0")) == shape["steps"]
        )
        lost += not ok
    return lost


def level(uri: str, clients: int, runs: int, shape: dict) -> dict:
    """Run `clients` processes at once; latency, throughput, errors and lost runs."""
    import mlflow.entities  # noqa: F401 - imported once here, before the clients fork
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(uri).create_experiment(f"load-{clients}-{time.time_ns()}")
    ctx = mp.get_context("fork")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=client, args=(uri, exp, runs, shape, ready, go, out))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    for _ in procs:  # the clock starts once every client is up
        ready.get(timeout=300)
    start = time.perf_counter()
    go.set()
    results = []
    while len(results) < clients:
        try:
            results.append(out.get(timeout=5))
        except queue.Empty:
            if all(p.exitcode is not None for p in procs) and out.empty():
                crashed = clients - len(results)  # a client that died reports its runs as errors
                results += [
                    {"latencies": [], "errors": ["client died"] * runs, "run_ids": []}
                ] * crashed
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    lat = sorted(x for r in results for x in r["latencies"])
    errors = [e for r in results for e in r["errors"]]
    run_ids = [i for r in results for i in r["run_ids"]]
    pct = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {
        "clients": clients,
        "runs": len(run_ids),
        "wall_s": round(wall, 2),
        "runs_per_s": round(len(run_ids) / wall, 2),
        "values_per_s": round(
            len(run_ids) * (shape["params"] + shape["metrics"] * shape["steps"]) / wall
        ),
        "p50_s": round(pct[49], 3) if lat else None,
        "p95_s": round(pct[94], 3) if lat else None,
        "max_s": round(lat[-1], 3) if lat else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "lost": verify(uri, run_ids, shape) + (clients * runs - len(run_ids) - len(errors)),
    }


BACKENDS = ("sqlite", "postgres", "postgres-team")


CLIENT_ENV = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
)


def backend_server(kind: str, home: Path, workers: int) -> tuple[str, Callable[[], object]]:
    """Start the backend (its store, its server, for a team an editor to log as); return
    its URL and how to stop it all."""
    settings = Settings(
        paths={"home": home},
        postgres=Postgres(port=free_port()),
        tracking={"port": free_port(), "team_port": free_port()},
    )
    store = server_home.Store.sqlite if kind == "sqlite" else server_home.Store.postgres
    team = kind == "postgres-team"
    settings, url = server_home.start(settings, store, team_mode=team, workers=workers)
    if team:
        password = users.add(settings, "loader", "editor")
        assert password is not None  # generated: written to its 0600 file
        os.environ["MLFLOW_TRACKING_USERNAME"] = "loader"
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password.read_text().strip()
        os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(settings.paths.tls / "ca.pem")

    def stop() -> None:
        server_home.stop(settings)
        for var in CLIENT_ENV:
            os.environ.pop(var, None)

    return url, stop


def probe(uri: str, n: int = 100) -> dict:
    """One client, one request at a time (`experiments/search`, keep-alive): what a single
    request costs on this backend, in ms."""
    import requests

    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    auth = (user, os.environ["MLFLOW_TRACKING_PASSWORD"]) if user else None
    times = []
    verify = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True  # per request: a
    with requests.Session() as session:  # session's verify loses to REQUESTS_CA_BUNDLE
        for _ in range(n + 5):  # the first five warm the connection and the credential cache
            start = time.perf_counter()
            r = session.get(
                f"{uri}/api/2.0/mlflow/experiments/search",
                params={"max_results": 1},
                auth=auth,
                verify=verify,
                timeout=30,
            )
            r.raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
    q = statistics.quantiles(times[5:], n=100, method="inclusive")
    return {"p50_ms": round(q[49], 2), "p95_ms": round(q[94], 2)}


def run(args) -> dict:
    shape = {"params": args.params, "metrics": args.metrics, "steps": args.steps}
    report = {
        "machine": stamp(),
        "shape": shape,
        "runs_per_client": args.runs,
        "workers": args.workers,
        "backends": {},
    }
    deadline = time.monotonic() + args.max_seconds
    for kind in args.backends:
        home = Path(tempfile.mkdtemp(prefix=f"duration-load-{kind}-"))
        os.chmod(home, 0o711)  # as root, the cluster's unprivileged user enters it
        uri, stop = backend_server(kind, home, args.workers)
        rows, limit = [], None
        try:
            one = probe(uri)
            for n in args.clients:
                if time.monotonic() > deadline:
                    limit = f"stopped at the time bound ({args.max_seconds} s)"
                    break
                row = level(uri, n, args.runs, shape)
                rows.append(row)
                print(f"{kind:8} {json.dumps(row)}", flush=True)
                if row["errors"] or row["lost"]:
                    limit = f"errors at {n} clients"
                    break
                if row["p95_s"] and row["p95_s"] > P95_LIMIT_S:
                    limit = f"p95 passed {P95_LIMIT_S:.0f} s at {n} clients"
                    break
        finally:
            stop()
            shutil.rmtree(home, ignore_errors=True)
        limit = limit or "none up to the bound"
        report["backends"][kind] = {"levels": rows, "limit": limit, "request": one}
    return report


def markdown(report: dict, seconds: float) -> list[str]:
    s = report["shape"]
    m = report["machine"]
    lines = [
        "# Tracking server load: SQLite, PostgreSQL, and the team server (auth + TLS)",
        "",
        f"Measured at {m['commit']} on {m['cores']} cores ({m['measured_at']}).",
        "",
        f"`make load` on this machine ({os.cpu_count()} cores; clients and servers share them),"
        f" {seconds:.0f} s in all. Each client process creates {report['runs_per_client']} runs;"
        f" per run it logs {s['params']} params and {s['metrics']} metrics x {s['steps']} steps"
        f" ({s['params'] + s['metrics'] * s['steps']} values) in `log_batch` calls, then ends the"
        f" run. Latency is per run (create, log, end). Each server runs {report['workers']}"
        " uvicorn workers; lost = runs whose values did not all read back. `postgres-team` is"
        " the PostgreSQL store behind `duration server start --team`: every request with basic"
        " auth (MLflow's credential cache on) through nginx's TLS, as an editor.",
        "",
        "| backend | clients | runs | runs/s | values/s | p50 s | p95 s | max s | errors | lost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, b in report["backends"].items():
        for r in b["levels"]:
            lines.append(
                f"| {kind} | {r['clients']} | {r['runs']} | {r['runs_per_s']} | "
                f"{r['values_per_s']} | {r['p50_s']} | {r['p95_s']} | {r['max_s']} | "
                f"{r['errors']} | {r['lost']} |"
            )
    lines += [
        "",
        "One client, one `experiments/search` at a time over keep-alive (100 requests):",
        "",
        "| backend | p50 ms | p95 ms |",
        "|---|---:|---:|",
    ]
    for kind, b in report["backends"].items():
        lines.append(f"| {kind} | {b['request']['p50_ms']} | {b['request']['p95_ms']} |")
    b = report["backends"]
    if "postgres" in b and "postgres-team" in b:
        extra = b["postgres-team"]["request"]["p50_ms"] - b["postgres"]["request"]["p50_ms"]
        lines += [
            "",
            f"Auth and TLS cost {extra:.1f} ms a request at p50 (postgres-team less postgres), "
            "with MLflow's credential cache warm.",
        ]
    lines += ["", "Where each backend stops (errors, or p95 over 5 s):", ""]
    for kind, b in report["backends"].items():
        first = next((r["first_error"] for r in b["levels"] if r["first_error"]), "")
        lines.append(
            f"- **{kind}**: {b['limit']}" + (f" (first error: `{first}`)" if first else "")
        )
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[4, 8, 16, 32, 48, 64])
    p.add_argument("--runs", type=int, default=10, help="runs per client")
    p.add_argument("--params", type=int, default=10)
    p.add_argument("--metrics", type=int, default=10)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--workers", type=int, default=4, help="uvicorn workers per server")
    p.add_argument("--max-seconds", type=float, default=900, help="stop climbing after this")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--out", type=Path, default=REPORTS, help="the folder of load.md and .json")
    args = p.parse_args()
    configure()
    start = time.perf_counter()
    report = run(args)
    seconds = time.perf_counter() - start
    report["seconds"] = round(seconds, 1)
    write("load", report, markdown(report, seconds), folder=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
