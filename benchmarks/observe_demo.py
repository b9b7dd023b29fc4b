"""Serving watched by Prometheus, end to end (`make observe-demo`): on a home where the
project's model has two versions (after `make automate-demo --keep DIR`, or your own),
serve the newest as Production and the one before as a canary, start `duration observe`,
replay a month's real rides, ask Prometheus how many rides it counted and compare with the
prediction log; then kill the canary's whole group and wait for the arm-down alert at a
local receiver, and its resolution after the canary is taken out. Writes reports/observe.md
and .json. (Debian's prometheus package serves no web UI of its own: its API answers.)

    DURATION_HOME=DIR python -m benchmarks.observe_demo [--month 2023-06] [--rides 3000]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.support.alert_sink import alert_sink
from benchmarks.support.report import stamp, write
from duration.infra.net import free_port
from duration.observe import life as observe
from duration.serving import log_read
from duration.serving.state import read_state
from duration.settings import Settings
from duration.tracking import client
from duration.tracking.names import MODEL_NAME

COUNTED = "sum(duration_serving_rides_total)"


def cli(*args: str, env: dict[str, str]) -> str:
    exe = str(Path(sys.executable).with_name("duration"))
    proc = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        sys.exit(f"observe-demo: `duration {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def wait(ok, timeout: float) -> float:
    """Seconds until `ok()` held (exits when it never does within `timeout`)."""
    t0 = time.monotonic()
    while not ok():
        if time.monotonic() - t0 > timeout:
            sys.exit(f"observe-demo: not within {timeout:g} s")
        time.sleep(0.5)
    return time.monotonic() - t0


def counted(s: Settings) -> float:
    got = observe.query(s, COUNTED)
    return float(got[0]["value"][1]) if got else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.observe_demo")
    parser.add_argument("--month", default="2023-06")
    parser.add_argument("--rides", type=int, default=3000)
    args = parser.parse_args()
    with alert_sink() as sink:
        env = {
            **os.environ,
            "DURATION_SCRAPE_S": "2",
            "DURATION_ALERT_URL": sink.url,
            "DURATION_PROMETHEUS_PORT": str(free_port()),
            "DURATION_ALERTMANAGER_PORT": str(free_port()),
            "DURATION_ALERT_RELAY_PORT": str(free_port()),
            "SERVE_PORT": str(free_port()),
        }
        s = Settings.from_env(env)
        os.environ.update({k: v for k, v in env.items() if k.startswith(("DURATION_", "SERVE"))})
        client.configure()
        client.use(s.tracking.url)
        print(cli("serve", "start", env=env))
        production = read_state(s).version
        canary = str(int(production) - 1)
        print(cli("deploy", "--canary", canary, "--weight", "30", env=env))
        print(cli("observe", "start", env=env))
        try:
            before = log_read.read(s.paths.serve_log).table.num_rows
            replay = ("--month", args.month, "--rides", str(args.rides), "--rate", "500")
            print(cli("traffic", *replay, env=env))
            seen = wait(lambda: counted(s) >= args.rides, 60)
            rows = log_read.read(s.paths.serve_log).table.num_rows - before
            by_arm = {
                r["metric"]["arm"]: float(r["value"][1])
                for r in observe.query(s, "sum by (arm) (duration_serving_rides_total)")
            }
            os.killpg(read_state(s).candidate.pid, signal.SIGKILL)
            fired = wait(lambda: "firing" in sink.events(), 180)
            print(cli("deploy", "--abort", env=env))
            resolved = wait(lambda: "resolved" in sink.events(), 180)
        finally:
            cli("observe", "stop", env=env)
            cli("serve", "stop", env=env)
    alerts = [m for m in sink.messages if m.get("alertname")]
    lines = [
        "# Serving watched by Prometheus (`python -m benchmarks.observe_demo`)",
        "",
        f"{stamp()}. {MODEL_NAME} v{production} in Production, v{canary} a canary for 30%; "
        f"Prometheus scrapes each worker group every 2 s.",
        "",
        f"- replayed {args.rides} real rides of {args.month}; `{COUNTED}` = "
        f"{sum(by_arm.values()):g} after {seen:.1f} s ({by_arm}); the prediction log: "
        f"{rows} new rows",
        f"- the canary's group killed with -9: the receiver got `{alerts[0]['text']}` "
        f"{fired:.0f} s later; after `deploy --abort`, `{alerts[-1]['text']}` "
        f"{resolved:.0f} s after that",
        f"- messages at the receiver: {len(alerts)} ({', '.join(m['event'] for m in alerts)})",
    ]
    figures = {"machine": stamp(), "by_arm": by_arm, "log_rows": rows, "alerts": alerts}
    write("observe", figures, lines)


if __name__ == "__main__":
    main()
