"""Benchmark serving (`make bench-serve`): start time, smoke test, switch gap, requests/s.

Serves the Production version of the project's tracking server (run `make pipeline` first)
from a serving folder and port of its own, so a serving process of yours is left alone:

- start: `serve start` from nothing (the scoring process and the proxy);
- throughput: clients posting 1 and 100 rides for a few seconds each, through the proxy and
  straight to the scoring process, with 1 and 4 client threads (keep-alive connections);
- a redeploy (`deploy --force`) while a client posts on a new connection every 20 ms: its
  start, smoke-test and switch times, failed requests and the slowest answer.

Clients run in this process on the same 2 cores as the server: the figures are a floor.
Writes reports/serve.json and reports/serve.md.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

from duration.bench.runs import stamp
from duration.infra import serving, tracking_server
from duration.infra.net import free_port
from duration.ops import deploy
from duration.settings import Settings
from duration.tracking.client import use
from duration.tracking.names import MODEL_NAME

REPORTS = Path(__file__).resolve().parents[1] / "reports"
SECONDS = 8.0


def throughput(url: str, body: dict, threads: int, seconds: float = SECONDS) -> dict:
    """Requests per second and latency percentiles of `threads` keep-alive clients."""
    latencies: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds

    def client() -> None:
        with requests.Session() as s:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r = s.post(f"{url}/invocations", json=body, timeout=30)
                latencies.append(time.perf_counter() - t0)
                errors[0] += r.status_code != 200

    pool = [threading.Thread(target=client) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    ms = np.asarray(latencies) * 1000
    return {
        "requests_per_s": round(len(ms) / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "errors": errors[0],
    }


def redeploy_under_load(s: Settings, body: dict) -> dict:
    """`deploy --force` while a client posts on a new connection every 20 ms."""
    failures, latencies = [], []
    done = threading.Event()

    def client() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            try:
                r = requests.post(f"{s.serve.url}/invocations", json=body, timeout=30)
                if r.status_code != 200:
                    failures.append(r.status_code)
            except requests.RequestException as e:
                failures.append(str(e)[:80])
            latencies.append(time.perf_counter() - t0)
            done.wait(0.02)

    t = threading.Thread(target=client)
    t.start()
    time.sleep(1)
    d = deploy.deploy(s, MODEL_NAME, force=True)
    time.sleep(1)
    done.set()
    t.join()
    return {
        **d.timings,
        "smoke_rows": d.smoke["rows"],
        "smoke_max_abs_diff": d.smoke["max_abs_diff"],
        "requests": len(latencies),
        "failed": len(failures),
        "slowest_ms": round(max(latencies) * 1000, 1),
    }


def main() -> None:
    base = Settings.from_env()
    use(tracking_server.ensure(base))
    version = deploy.production_version(MODEL_NAME)
    with tempfile.TemporaryDirectory() as tmp:
        s = base.but(paths={"home": Path(tmp), "data_dir": base.paths.data},
                     serve={"port": free_port()})  # fmt: skip
        records, month = deploy.smoke_rides(s, "green", 100)
        one, hundred = (
            {"dataframe_split": json.loads(r.to_json(orient="split", date_format="iso"))}
            for r in (records.head(1), records)
        )
        t0 = time.perf_counter()
        state = deploy.start(s, MODEL_NAME)
        start_s = time.perf_counter() - t0
        try:
            rows = [
                {"target": target, "rides": n, "threads": k, **throughput(url, body, k)}
                for target, url in (("proxy", s.serve.url), ("direct", state.backend.url))
                for n, body in ((1, one), (100, hundred))
                for k in (1, 4)
            ]
            switch = redeploy_under_load(s, one)
        finally:
            serving.stop(s)
    report = {"machine": stamp(), "version": version, "month": month, "start_s": round(start_s, 2),
              "throughput": rows, "redeploy": switch}  # fmt: skip
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "serve.json").write_text(json.dumps(report, indent=2) + "\n")
    (REPORTS / "serve.md").write_text(markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    d = r["redeploy"]
    lines = [
        f"# Serving benchmark (`make bench-serve`), {MODEL_NAME} v{r['version']}",
        "",
        f"- `serve start` from nothing (scoring process and proxy): {r['start_s']} s",
        f"- redeploy under load: start {d['start_s']} s, smoke test of {d['smoke_rows']} rides "
        f"{d['smoke_s']} s (max diff {d['smoke_max_abs_diff']:.2g} min), switch "
        f"{d['switch_s']} s; {d['failed']} failed of {d['requests']} requests, slowest "
        f"{d['slowest_ms']} ms",
        "",
        "| target | rides per request | client threads | requests/s | p50 ms | p95 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in r["throughput"]:
        lines.append(
            f"| {t['target']} | {t['rides']} | {t['threads']} | {t['requests_per_s']} | "
            f"{t['p50_ms']} | {t['p95_ms']} | {t['errors']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
