"""Benchmark serving (`make bench-serve`): requests/s and latency with wrk, against the
transport floor, logging on and off, a redeploy under load, and the served answers checked.

Serves the Production version of the project's tracking server (run `make pipeline` first)
from a serving folder and port of its own, so a serving process of yours is left alone.
wrk runs on the same 2 cores as nginx and the workers: the figures are a floor.

- one ride a request, through the proxy and straight to the workers: requests/s, p50, p99;
- 100 rides a request through the proxy: rides/s;
- a bare ASGI app under uvicorn, the same workers and flags, the same load: the floor;
- the proxy with the prediction log on, and a second service beside it with the log off,
  measured in turn: what logging costs; the same with `/metrics` on and off;
- a shadow beside Production, healthy, made slow (SIGSTOP) and dead: Production's p99;
- `deploy --force` while wrk runs: failed requests during the switch;
- 1,000 real rides replayed (`duration traffic`): the log has one row each, and the served
  predictions equal the version's in-process ones.

Writes reports/serve.json and reports/serve.md.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.support import wrk
from benchmarks.support.report import stamp, write
from duration.core.records import raw_records
from duration.core.rides import ride_ids
from duration.data import prepare
from duration.infra.net import LOOPBACK, free_port, port_in_use
from duration.infra.proc import stop_group
from duration.ops import deploy, traffic
from duration.ops.specs import TrafficRequest
from duration.registry.uris import load
from duration.server import tracking_server
from duration.serving import client, log_read, proxy, service, workers
from duration.serving.state import Role, read_state
from duration.settings import Settings
from duration.tracking.client import use
from duration.tracking.names import MODEL_NAME

SECONDS = 8.0
WARMUP = 2.0  # seconds of load before each measured run, not counted
ROUNDS = 8  # of logging on and off, back to back (in turn, which goes first)
PAIRED = 4.0  # seconds of each run of a round
CONNECTIONS = 8  # one ride a request
BATCH_CONNECTIONS = 4  # 100 rides a request
TARGETS = {
    "single_ride_rps": 1000,
    "single_ride_p99_ms": 25,
    "batch_rides_per_s": 20_000,
    "logging_overhead_pct": 10,
    "metrics_overhead_pct": 5,
    "max_abs_diff_min": 1e-6,
}


def floor(count: int, one: bytes) -> dict:
    """The bare ASGI app under uvicorn as the workers run, loaded as they are."""
    port = free_port()
    cmd = workers.uvicorn_command("benchmarks.support.floor:app", port, count, factory=False)
    proc = subprocess.Popen(
        [*cmd, "--lifespan", "off"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://{LOOPBACK}:{port}"
        client.wait_healthy(url, 60, "the floor app")
        return wrk.run(f"{url}/invocations", one, CONNECTIONS, SECONDS)
    finally:
        stop_group(proc.pid)


def paired_cost(s: Settings, one: bytes, tmp: Path, switch: str) -> dict:
    """The proxy's requests/s with `serve.<switch>` on (the service under test) and off (a
    second one beside it, idle while the first is measured), alternated, after a warm-up
    each."""
    off = s.but(paths={"home": tmp / f"no-{switch}"}, serve={"port": free_port(), switch: False})
    deploy.start(off, MODEL_NAME)
    runs: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for i in range(ROUNDS):
            pair = (("on", s.serve.url), ("off", off.serve.url))
            for name, url in pair if i % 2 == 0 else pair[::-1]:
                wrk.run(f"{url}/invocations", one, CONNECTIONS, WARMUP)
                rps = wrk.run(f"{url}/invocations", one, CONNECTIONS, PAIRED)["requests_per_s"]
                runs[name].append(rps)
    finally:
        service.stop(off)
    # this machine's speed drifts by a fifth over a minute: each round's two runs, back to
    # back, are compared, and the median of the rounds' ratios is the cost
    ratio = float(np.median(np.asarray(runs["on"]) / np.asarray(runs["off"])))
    return {
        "on_rps": float(np.median(runs["on"])),
        "off_rps": float(np.median(runs["off"])),
        "runs": runs,
        "overhead_pct": round((1 - ratio) * 100, 1),
    }


def shadow_cost(s: Settings, one: bytes) -> dict:
    """Production's p99 with no shadow, a healthy one, one made slow (its workers stopped
    with SIGSTOP: it accepts and never answers), and a dead one. The shadow here is a
    second set of workers of the same version: it is the mirror's cost that is measured."""
    url = f"{s.serve.url}/invocations"
    out = {"none": wrk.run(url, one, CONNECTIONS, SECONDS)}
    state = read_state(s)
    assert state is not None, "Production serves"
    with service.started(s, MODEL_NAME, state.version, Role.shadow, 100) as group:
        service.add_arm(s, state, group, Role.shadow, 100)
    try:
        wrk.run(url, one, CONNECTIONS, WARMUP)
        out["healthy"] = wrk.run(url, one, CONNECTIONS, SECONDS)
        os.killpg(group.pid, signal.SIGSTOP)
        out["slow"] = wrk.run(url, one, CONNECTIONS, SECONDS)
        os.killpg(group.pid, signal.SIGCONT)
        os.killpg(group.pid, signal.SIGKILL)
        time.sleep(0.5)
        out["dead"] = wrk.run(url, one, CONNECTIONS, SECONDS)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group.pid, signal.SIGCONT)
        now = read_state(s)
        assert now is not None, "Production serves"
        service.remove_arm(s, now)
    keys = ("requests_per_s", "p50_ms", "p99_ms", "failed")
    return {k: {key: v[key] for key in keys} for k, v in out.items()}


def redeploy_under_load(s: Settings, one: bytes) -> dict:
    """`deploy --force` while wrk posts one ride a request on 4 connections."""
    out: dict = {}
    load_s = 30.0
    url = f"{s.serve.url}/invocations"
    t = threading.Thread(target=lambda: out.update(wrk.run(url, one, 4, load_s)))
    t.start()
    time.sleep(2)
    d = deploy.deploy(s, MODEL_NAME, force=True)
    t.join()
    return {
        **d.timings,
        "smoke_rows": d.smoke.rows if d.smoke else 0,
        "load_s": load_s,
        "requests": out["requests"],
        "failed": out["failed"],
        "slowest_ms": out["max_ms"],
    }


def replayed(s: Settings, version: str, month: str) -> dict:
    """1,000 real rides through `duration traffic`; the log and the answers checked."""
    t = traffic.replay(s, TrafficRequest(month=month, rides=1000, rate=2000, concurrency=4))
    deploy.stop(s)  # a graceful stop flushes every worker's log
    log = log_read.read(s.paths.serve_log).table.to_pandas().dropna(subset=["ride_id"])
    rides = prepare.load_processed(s, "green", month).head(1000)
    records = raw_records(rides.drop(columns=["duration", "dropoff_datetime"]), "green")
    expected = load(f"models:/{MODEL_NAME}/{version}").predict(records)
    served = log.set_index("ride_id").loc[ride_ids("green", month, np.arange(1000))]
    diff = np.abs(served["prediction"].to_numpy() - expected)
    return {
        "rides": t.rides,
        "answered": t.answered_rides,
        "logged": len(log),
        "unique_request_ids": int(log["request_id"].nunique()),
        "max_abs_diff_min": float(diff.max()),
    }


def main() -> None:
    base = Settings.from_env()
    use(tracking_server.ensure(base))
    version = deploy.production_version(MODEL_NAME)
    with tempfile.TemporaryDirectory() as tmp:
        s = base.but(
            paths={"home": Path(tmp), "data_dir": base.paths.data}, serve={"port": free_port()}
        )
        records, month = deploy.smoke_rides(s, "green", 100)
        one, hundred = client.records_body(records.head(1)), client.records_body(records)
        t0 = time.perf_counter()
        state = deploy.start(s, MODEL_NAME)
        start_s = time.perf_counter() - t0
        try:
            wrk.run(f"{s.serve.url}/invocations", one, CONNECTIONS, WARMUP)
            proxy_1 = wrk.run(f"{s.serve.url}/invocations", one, CONNECTIONS, SECONDS)
            direct_1 = wrk.run(f"{state.production.url}/invocations", one, CONNECTIONS, SECONDS)
            proxy_100 = wrk.run(f"{s.serve.url}/invocations", hundred, BATCH_CONNECTIONS, SECONDS)
            bare = floor(s.serve.workers, one)
            cost = paired_cost(s, one, Path(tmp), "log")
            metered = paired_cost(s, one, Path(tmp), "metrics")
            shadow = shadow_cost(s, one)
            switch = redeploy_under_load(s, one)
            answers = replayed(s, version, month)
        finally:
            service.stop(s)
            assert not port_in_use(s.serve.port)
    report = {
        "machine": stamp(),
        "version": version,
        "month": month,
        "workers": s.serve.workers,
        "start_s": round(start_s, 2),
        "single_ride_rps": proxy_1["requests_per_s"],
        "single_ride_p99_ms": proxy_1["p99_ms"],
        "batch_rides_per_s": round(proxy_100["requests_per_s"] * 100),
        "floor_rps": bare["requests_per_s"],
        "floor_ratio": round(bare["requests_per_s"] / proxy_1["requests_per_s"], 2),
        "logging_overhead_pct": cost["overhead_pct"],
        "metrics_overhead_pct": metered["overhead_pct"],
        "max_abs_diff_min": answers["max_abs_diff_min"],
        "runs": {"proxy_1": proxy_1, "direct_1": direct_1, "proxy_100": proxy_100, "floor_1": bare},
        "shadow_p99_ms": {k: v["p99_ms"] for k, v in shadow.items()},
        "logging": cost,
        "metrics": metered,
        "shadow": shadow,
        "redeploy": switch,
        "replay": answers,
        "targets": TARGETS,
    }
    write("serve", report, markdown(report))


def _met(r: dict, key: str) -> str:
    low = key in (
        "single_ride_p99_ms",
        "logging_overhead_pct",
        "metrics_overhead_pct",
        "max_abs_diff_min",
    )
    ok = r[key] <= TARGETS[key] if low else r[key] >= TARGETS[key]
    return f"{'≤' if low else '≥'} {TARGETS[key]:g}: {'met' if ok else 'NOT MET'}"


def markdown(r: dict) -> list[str]:
    d, a, lg, mt = r["redeploy"], r["replay"], r["logging"], r["metrics"]
    row = "| {} | {} | {} | {} | {} | {} | {} |"
    lines = [
        f"# Serving benchmark (`make bench-serve`), {MODEL_NAME} v{r['version']}",
        "",
        f"{r['machine']}. {r['workers']} scoring workers behind nginx; wrk on the same cores.",
        "",
        "| figure | measured | target |",
        "|---|---|---|",
        f"| one ride a request through the proxy, requests/s | {r['single_ride_rps']} | "
        f"{_met(r, 'single_ride_rps')} |",
        f"| ... its p99, ms | {r['single_ride_p99_ms']} | {_met(r, 'single_ride_p99_ms')} |",
        f"| 100 rides a request, rides/s | {r['batch_rides_per_s']} | "
        f"{_met(r, 'batch_rides_per_s')} |",
        f"| logging's cost on requests/s, % | {r['logging_overhead_pct']} | "
        f"{_met(r, 'logging_overhead_pct')} |",
        f"| /metrics' cost on requests/s, % | {r['metrics_overhead_pct']} | "
        f"{_met(r, 'metrics_overhead_pct')} |",
        f"| served minus in-process prediction, max, min | {r['max_abs_diff_min']:.3g} | "
        f"{_met(r, 'max_abs_diff_min')} |",
        f"| the bare ASGI floor, requests/s (x the proxy's) | {r['floor_rps']} "
        f"({r['floor_ratio']}x) | |",
        "",
        "| target | rides a request | connections | requests/s | p50 ms | p99 ms | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, k in (("proxy_1", 1), ("direct_1", 1), ("proxy_100", 100), ("floor_1", 1)):
        t = r["runs"][name]
        conns = BATCH_CONNECTIONS if k == 100 else CONNECTIONS
        figures = (t["requests_per_s"], t["p50_ms"], t["p99_ms"], t["failed"])
        lines.append(row.format(name.rsplit("_", 1)[0], k, conns, *figures))
    lines += [
        "",
        f"- `serve start` from nothing: {r['start_s']} s",
        f"- logging on {lg['on_rps']} against off {lg['off_rps']} requests/s (medians of "
        f"{len(lg['runs']['on'])} rounds; the cost is the median of the rounds' ratios): "
        f"on {lg['runs']['on']}, off {lg['runs']['off']}",
        f"- /metrics on {mt['on_rps']} against off {mt['off_rps']} requests/s (the same "
        f"pairing): on {mt['runs']['on']}, off {mt['runs']['off']}",
        f"- redeploy under wrk load: start {d['start_s']} s, smoke test of {d['smoke_rows']} "
        f"rides {d['smoke_s']} s, switch {d['switch_s']} s; {d['failed']} failed of "
        f"{d['requests']} requests in {d['load_s']:g} s, slowest {d['slowest_ms']} ms",
        "",
        f"A shadow's cost on Production (one ride a request, {CONNECTIONS} connections; the "
        f"mirror's timeouts are {proxy.SHADOW_TIMEOUT_MS} ms):",
        "",
        "| shadow | requests/s | p50 ms | p99 ms | failed |",
        "|---|---|---|---|---|",
        *(
            f"| {k} | {v['requests_per_s']} | {v['p50_ms']} | {v['p99_ms']} | {v['failed']} |"
            for k, v in r["shadow"].items()
        ),
        "",
        f"- replay of {a['rides']} real rides: {a['answered']} answered, {a['logged']} log rows "
        f"({a['unique_request_ids']} request ids)",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
