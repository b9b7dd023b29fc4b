"""Serving at another commit against this checkout (`make bench-compare REF=b5f36cc`): the
same Production version served by both, side by side, measured in turn with wrk.

The other commit's `src/` is taken out of git (`git archive`) into `reports/bench-data/`,
and its own `duration serve start` runs with this venv's Python and that `src/` first on
its path: the same packages, the other code. Each serves from a home and a port of its
own, with the prediction log on, as `make serve` does. Each round measures both, one ride
a request, back to back (which goes first alternates); the figure is the median of the
rounds' ratios, since this machine's speed drifts over a minute.

Writes reports/compare.json and reports/compare.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np

from benchmarks.support import wrk
from benchmarks.support.report import REPORTS, WORK, stamp, write
from duration.errors import DurationError
from duration.infra.net import free_port
from duration.ops import deploy
from duration.server import tracking_server
from duration.serving import client
from duration.settings import Settings
from duration.tracking.client import use
from duration.tracking.names import MODEL_NAME

ROOT = REPORTS.parent
CONNECTIONS = 8
WARMUP = 2.0
MAIN = "import sys; from duration.cli import main; sys.exit(main(sys.argv[1:]))"


def checkout(ref: str) -> Path:
    """`ref`'s src/ under reports/bench-data/ (kept: a commit never changes)."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dest = WORK / f"ref-{sha}"
    if not (dest / "src" / "duration").is_dir():
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", sha, "src"],
            capture_output=True,
            check=True,
        ).stdout
        shutil.rmtree(dest, ignore_errors=True)
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")
    return dest


def duration(src: Path | None, home: Path, port: int, *args: str) -> None:
    """`duration ARGS` with `src` first on the path (None: this checkout's)."""
    env = {**os.environ, "DURATION_HOME": str(home), "SERVE_PORT": str(port)}
    if src is not None:
        env["PYTHONPATH"] = str(src / "src")
    proc = subprocess.run(
        [sys.executable, "-c", MAIN, *args], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise DurationError(f"duration {' '.join(args)} failed: {proc.stderr.strip()[-300:]}")


def rounds(urls: dict[str, str], body: bytes, n: int, seconds: float) -> dict[str, list[float]]:
    """Requests/s of each URL, `n` rounds, the order alternating."""
    out: dict[str, list[float]] = {name: [] for name in urls}
    pairs = list(urls.items())
    for i in range(n):
        for name, url in pairs if i % 2 == 0 else pairs[::-1]:
            wrk.run(f"{url}/invocations", body, CONNECTIONS, WARMUP)
            out[name].append(
                wrk.run(f"{url}/invocations", body, CONNECTIONS, seconds)["requests_per_s"]
            )
    return out


def compare(ref: str, n: int, seconds: float, now: str | None = None) -> dict:
    base = Settings.from_env()
    use(tracking_server.ensure(base))
    version = deploy.production_version(MODEL_NAME)
    src, mine = checkout(ref), checkout(now) if now else None
    records, _ = deploy.smoke_rides(base, "green", 1)
    body = client.records_body(records)
    with tempfile.TemporaryDirectory() as tmp:
        sides = {
            "ref": (src, Path(tmp) / "ref", free_port()),
            "now": (mine, Path(tmp) / "now", free_port()),
        }
        urls = {}
        try:
            for name, (code, home, port) in sides.items():
                duration(code, home, port, "serve", "start", "--name", MODEL_NAME)
                urls[name] = f"http://127.0.0.1:{port}"
            runs = rounds(urls, body, n, seconds)
        finally:
            for code, home, port in sides.values():
                duration(code, home, port, "serve", "stop")
    ratios = np.asarray(runs["now"]) / np.asarray(runs["ref"])
    return {
        "machine": stamp(),
        "ref": ref,
        "now": now or "this checkout",
        "version": version,
        "rounds": n,
        "seconds": seconds,
        "runs": runs,
        "ratios": [round(float(r), 4) for r in ratios],
        "median_ratio": round(float(np.median(ratios)), 4),
        "ref_rps": round(float(np.median(runs["ref"])), 1),
        "now_rps": round(float(np.median(runs["now"])), 1),
    }


def markdown(r: dict) -> list[str]:
    change = (r["median_ratio"] - 1) * 100
    return [
        f"# Serving at {r['ref']} against {r['now']}",
        "",
        f"{r['machine']}. {MODEL_NAME} v{r['version']}, one ride a request, {CONNECTIONS} "
        f"connections, {r['rounds']} rounds of {r['seconds']:g} s each side, back to back.",
        "",
        "| | requests/s (median) |",
        "|---|---|",
        f"| {r['ref']} | {r['ref_rps']} |",
        f"| {r['now']} | {r['now_rps']} |",
        "",
        f"Median of the rounds' ratios ({r['now']} / {r['ref']}): **{r['median_ratio']}** "
        f"({change:+.1f}%). Each round: {r['ratios']}.",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", default="b5f36cc", help="the commit to compare with")
    p.add_argument("--now", help="another commit in place of this checkout")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0, help="each side of a round")
    p.add_argument("--report", default="compare", help="reports/NAME.md and .json")
    args = p.parse_args()
    try:
        r = compare(args.ref, args.rounds, args.seconds, args.now)
    except DurationError as e:
        sys.exit(f"bench-compare: {e}")
    write(args.report, r, markdown(r))


if __name__ == "__main__":
    main()
