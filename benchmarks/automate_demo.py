"""`make automate-demo`: a year by itself. v1 is trained on green 2023-01 (validated on 02,
tested on 03), put in Production and served; then, month after month from 2023-04 to
2023-12, the month "happens" (its real rides are replayed through the served model), its
file is published into a temporary mirror that the orchestrator watches (its labels
"arrive"), and the orchestrator decides it, with no command typed. Everything runs through
the real CLI, on free loopback ports, in a temporary home.

It ends with a table, also written to reports/automate.md: per month, what served (versions,
arms and weights), the verdict, the decision, the served RMSE per arm, and the RMSE that v1
alone would have had on the same rides; the alerts received; the wall time.

    python -m benchmarks.automate_demo [--live off|canary|shadow] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.support.alert_sink import Sink, alert_sink
from benchmarks.support.browser import chromium
from benchmarks.support.report import REPORTS, stamp, write
from duration.automate import life
from duration.core.schema import month_range
from duration.data import prepare
from duration.data.tlc import trip_file
from duration.infra.net import free_port
from duration.ops import monitor_served
from duration.ops.decision import recorded
from duration.registry.evaluation import predict_frame
from duration.registry.uris import load
from duration.serving.state import read_state
from duration.settings import Settings
from duration.tracking import client
from duration.tracking.names import MODEL_NAME

TRAIN, VAL, TEST = "2023-01", "2023-02", "2023-03"
MONTH_TIMEOUT_S = 1200.0


@dataclass
class Row:
    """One month of the year."""

    month: str
    served: str = ""  # what answered the clients during the month
    verdict: str = ""
    decision: str = ""
    arms: dict[str, float] = field(default_factory=dict)  # "production v1" -> RMSE
    v1_rmse: float = float("nan")
    served_rmse: float = float("nan")
    rides: int = 0
    seconds: float = 0.0


def duration_cli(*args: str, env: dict[str, str]) -> str:
    """Run the real CLI; its stdout (one line and exit on failure)."""
    exe = str(Path(sys.executable).with_name("duration"))
    proc = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"automate-demo: `duration {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def publish(source: Path, mirror: Path, month: str) -> None:
    """The TLC publishes the month: its file appears whole in the watched mirror."""
    name = trip_file("green", month)
    tmp = mirror / "trip-data" / f".{name}.part"
    shutil.copyfile(source / "trip-data" / name, tmp)
    tmp.rename(mirror / "trip-data" / name)


def serving_said(s: Settings) -> str:
    state = read_state(s)
    if state is None:
        return "nothing"
    c = state.candidate
    if c is None:
        return f"v{state.version}"
    share = f" {c.weight}%" if c.role.value == "canary" else ""
    return f"v{state.version} + {c.role.value} v{c.version}{share}"


def wait_decided(s: Settings, month: str) -> None:
    """Until the orchestrator has decided `month` (its decision run is recorded)."""
    deadline = time.monotonic() + MONTH_TIMEOUT_S
    while recorded(MODEL_NAME, month) is None:
        if time.monotonic() > deadline:
            sys.exit(f"automate-demo: {month} was not decided within {MONTH_TIMEOUT_S:.0f} s")
        time.sleep(2)


def measure(s: Settings, row: Row, errors: dict[str, list[np.ndarray]]) -> None:
    """The month's served rides against their real durations: per arm, and v1's on them."""
    joined = monitor_served.join(s, "green", row.month).labelled
    month = prepare.load_processed(s, "green", row.month)
    rides = month.iloc[joined["label_row"].to_numpy()].reset_index(drop=True)
    v1 = predict_frame(load(f"models:/{MODEL_NAME}/1"), rides, "green")
    answered = (joined["arm"] != "shadow").to_numpy()
    truth = joined["duration"].to_numpy()
    for (arm, version), part in joined.groupby(["arm", "model_version"]):
        err = part["prediction"].to_numpy() - part["duration"].to_numpy()
        row.arms[f"{arm} v{version}"] = float(np.sqrt(np.mean(err**2)))
    served = joined["prediction"].to_numpy()[answered] - truth[answered]
    frozen = v1[answered] - truth[answered]
    row.rides = int(answered.sum())
    row.served_rmse = float(np.sqrt(np.mean(served**2)))
    row.v1_rmse = float(np.sqrt(np.mean(frozen**2)))
    errors["served"].append(served)
    errors["v1"].append(frozen)


def table(rows: list[Row], errors: dict[str, list[np.ndarray]]) -> list[str]:
    head = "| month | served | verdict | decision | served RMSE by arm | served RMSE | v1 alone |"
    lines = [head, "| --- | --- | --- | --- | --- | ---: | ---: |"]
    for r in rows:
        arms = "; ".join(f"{k} {v:.4f}" for k, v in r.arms.items())
        lines.append(
            f"| {r.month} | {r.served} | {r.verdict} | {r.decision} | {arms} | "
            f"{r.served_rmse:.4f} | {r.v1_rmse:.4f} |"
        )
    served = float(np.sqrt(np.mean(np.concatenate(errors["served"]) ** 2)))
    v1 = float(np.sqrt(np.mean(np.concatenate(errors["v1"]) ** 2)))
    rides = sum(r.rides for r in rows)
    lines.append(f"| **all** | {rides} rides | | | | **{served:.4f}** | **{v1:.4f}** |")
    lines.append("")
    lines.append(
        f"Served RMSE over the {len(rows)} months: {served:.4f} min against {v1:.4f} for v1 "
        f"frozen on the same rides: {100 * (1 - served / v1):.1f}% lower."
    )
    return lines


def shoot_page(page_file: Path, out: Path) -> None:
    """The model's life page, as the docs show it."""
    with chromium(["--window-size=1400,1280"]) as page:
        page.open(page_file.resolve().as_uri(), 6)
        assert page.errors() == [], page.errors()
        print(page.screenshot(out))


def screenshot(s: Settings, month: str, out: Path) -> None:
    """The orchestrator's UI: the decision asset's months, and `month`'s decision."""
    url = f"{life.url(s)}/assets/month_decision?view=partitions&partition={month}"
    with chromium() as page:
        page.open(url, 12)
        print(page.screenshot(out))


def run(args: argparse.Namespace, source: Path, work: Path, sink: Sink) -> dict[str, object]:
    mirror, home = work / "tlc", work / "home"
    for part in ("misc", "metadata"):
        shutil.copytree(source / part, mirror / part)
    (mirror / "trip-data").mkdir(parents=True)
    home.mkdir()
    for month in (TRAIN, VAL, TEST):
        publish(source, mirror, month)
    env = {
        **os.environ,
        "DURATION_HOME": str(home),
        "DURATION_TLC_URL": f"file://{mirror}",
        "MLFLOW_PORT": str(free_port()),
        "SERVE_PORT": str(free_port()),
        "DURATION_DEPLOY_HOOK_PORT": str(free_port()),
        "DURATION_AUTOMATE_PORT": str(free_port()),
        "DURATION_AUTOMATE_POLL_S": "2",
        "DURATION_RECONCILE_S": "30",
        "DURATION_CYCLE_LIVE": args.live,
        "DURATION_ALERT_URL": sink.url,
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    s = Settings.from_env(env)
    replay_env = {**env, "DURATION_TLC_URL": f"file://{source}"}  # the rides "happen"
    replayed = Settings.from_env(replay_env)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("DURATION_", "MLFLOW_"))})
    client.configure()
    client.use(s.tracking.url)
    t0 = time.monotonic()
    print(duration_cli("pipeline", "--train", TRAIN, "--val", VAL, "--test", TEST, env=env))
    print(duration_cli("serve", "start", env=env))
    print(duration_cli("automate", "start", env=env))
    rows, errors = [], {"served": [], "v1": []}
    try:
        for month in month_range(args.start, args.end):
            t = time.monotonic()
            row = Row(month=month, served=serving_said(s))
            rides = len(prepare.load_processed(replayed, "green", month, columns=["duration"]))
            every = ("--rides", str(rides), "--rate", "5000", "--concurrency", "4", "--batch", "50")
            duration_cli("traffic", "--month", month, *every, env=replay_env)
            publish(source, mirror, month)
            wait_decided(s, month)
            d = recorded(MODEL_NAME, month)
            assert d is not None
            row.verdict = d.verdict
            row.decision = d.action + (f" v{d.challenger_version}" if d.challenger_version else "")
            measure(s, row, errors)
            row.seconds = time.monotonic() - t
            rows.append(row)
            print(f"{month}: {row.served} -> {row.verdict}, {row.decision} ({row.seconds:.0f} s)")
        life = REPORTS / f"model-life-{args.start}-{args.end}.html"
        print(
            duration_cli(
                "report", "--from", args.start, "--to", args.end, "--output", str(life), env=env
            )
        )
        if args.screenshot:
            shown = [r.month for r in rows if r.decision.startswith("promoted")] or [rows[-1].month]
            screenshot(s, shown[-1], REPORTS.parent / "docs" / "automate-partitions.png")
            shoot_page(life, REPORTS.parent / "docs" / "model-life.png")
    finally:
        duration_cli("automate", "stop", env=env)
        duration_cli("serve", "stop", env=env)
        subprocess.run(
            [str(Path(sys.executable).with_name("duration")), "server", "stop"],
            env=env,
            capture_output=True,
            timeout=120,
        )
    wall = time.monotonic() - t0
    events = sink.events()
    ids = [m.get("id") for m in sink.messages]
    lines = [
        "# A year by itself (`make automate-demo`)",
        "",
        f"v1 trained on green {TRAIN} (validated on {VAL}, tested on {TEST}); the orchestrator "
        f"then decided {args.start}..{args.end} as each month was published, with no command "
        f"typed. Cycle live mode: {args.live}. Wall time: {wall / 60:.1f} min "
        f"({stamp()['cores']} cores).",
        "",
        f"Settings: a retrain learns from {s.automate.window} labelled months "
        f"(DURATION_CYCLE_WINDOW), a month is degraded above {s.monitor.rmse_ratio:g} x the "
        f"version's test RMSE (DURATION_RMSE_RATIO), {s.automate.trials} search trials, a "
        f"canary serves {s.automate.live_weight}% of clients. The page of the model's life: "
        f"`reports/model-life-{args.start}-{args.end}.html`.",
        "",
        *table(rows, errors),
        "",
        f"Alerts received: {len(events)}, {len(ids) - len(set(ids))} of them twice: "
        + ", ".join(f"{e} x{events.count(e)}" for e in sorted(set(events))),
    ]
    return {
        "lines": lines,
        "figures": {
            **stamp(),
            "wall_s": round(wall, 1),
            "live": args.live,
            "months": [vars(r) for r in rows],
            "alerts": sink.messages,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.automate_demo")
    parser.add_argument("--from", dest="start", default="2023-04")
    parser.add_argument("--to", dest="end", default="2023-12")
    parser.add_argument("--live", default="canary", choices=["off", "canary", "shadow"])
    parser.add_argument("--keep", type=Path, help="Work here and keep it (default: a temp dir).")
    parser.add_argument("--screenshot", action="store_true", help="docs/img: the UI's months.")
    args = parser.parse_args()
    url = os.environ.get("DURATION_TLC_URL", "")
    source = Path(url.removeprefix("file://"))
    if (
        not url.startswith("file://")
        or not (source / "trip-data" / trip_file("green", args.end)).exists()
    ):
        sys.exit(
            "automate-demo: set DURATION_TLC_URL=file://<path>/shared/data/tlc (the mirror, with "
            f"green {TRAIN}..{args.end}): the demo publishes its months one by one"
        )
    with alert_sink() as sink:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=False)
            out = run(args, source, args.keep, sink)
        else:
            with tempfile.TemporaryDirectory(prefix="automate-demo-") as tmp:
                out = run(args, source, Path(tmp), sink)
    write("automate", out["figures"], out["lines"])  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
