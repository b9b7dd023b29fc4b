"""Serving and the team server under faults and hostile input (`make bench-faults`).

Serves the Production version of the project's tracking server (run `make pipeline` first)
from a home and a port of its own, then:

- five tries of a worker killed with -9 under 5,000 real rides at 500 a second: answered,
  logged, lost, broken;
- the refusals, input by input: each hostile or nonsensical body, its status and message,
  and a good ride answered afterwards;
- a team server of its own (SQLite store, TLS front) and a user guessing passwords: when
  the 429s start, how long the lock is, another address meanwhile, and the right password
  once the lock has passed.

Everything runs on loopback, bounded in count and time. Writes reports/faults.json and
reports/faults.md.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import requests

from benchmarks.support.faults import kill_try
from benchmarks.support.report import markdown_table, stamp, write
from duration.errors import DurationError
from duration.infra.net import free_port
from duration.ops import deploy
from duration.server import front, team, tracking_server, users
from duration.serving import client
from duration.settings import Settings, Tracking
from duration.tracking.client import use
from duration.tracking.names import MODEL_NAME

TRIES = 5
GUESSES = 12


def bodies(record: dict) -> dict[str, bytes]:
    """Each hostile or nonsensical body, by what it is."""

    def two(**change: object) -> bytes:
        rides = [record, {**record, **change}]
        return json.dumps({"dataframe_records": rides}).encode()

    return {
        "not JSON": b"{garbage",
        "10,000-deep nested JSON": b"[" * 10_000 + b"]" * 10_000,
        "a list where a value goes": two(PULocationID=[1, 2]),
        "Infinity as a distance": two(trip_distance=float("inf")),
        "NaN beside a good ride": two(VendorID=float("nan")),
        "a lone NaN distance": json.dumps(
            {"dataframe_records": [{**record, "trip_distance": float("nan")}]}
        ).encode(),
        "a negative distance": two(trip_distance=-1.5),
        "244,152 miles": two(trip_distance=244152.0),
        "zone 99999": two(DOLocationID=99999),
        'zone "x"': two(PULocationID="x"),
        "a pickup in 2031": two(lpep_pickup_datetime="2031-01-01T00:00:00"),
        "a pickup in 2008": two(lpep_pickup_datetime="2008-06-01T00:00:00"),
        "no rides": json.dumps({"dataframe_records": []}).encode(),
        "10,000 rides": json.dumps({"dataframe_records": [record] * 10_000}).encode(),
    }


def refusals(s: Settings) -> list[dict]:
    """Each body through the proxy: its status and message; then a good ride."""
    records, _ = deploy.smoke_rides(s, "green", 1)
    record = json.loads(records.to_json(orient="records", date_format="iso"))[0]
    rows = []
    headers = {"Content-Type": "application/json"}
    for what, body in bodies(record).items():
        r = requests.post(f"{s.serve.url}/invocations", data=body, headers=headers, timeout=30)
        message = (
            r.json().get("message", "")
            if r.headers.get("content-type", "").startswith("application/json")
            else r.text
        )
        rows.append({"input": what, "status": r.status_code, "message": message[:150]})
    good = requests.post(
        f"{s.serve.url}/invocations", data=client.records_body(records), headers=headers, timeout=30
    )
    rows.append({"input": "a good ride, afterwards", "status": good.status_code, "message": ""})
    return rows


def guessing(root: Path) -> dict:
    """A team server of its own; a user's password guessed from one address."""
    s = Settings(
        paths={"home": root},
        tracking=Tracking(port=free_port(), team_port=free_port(), login_lock_s=5.0),
    )
    team.start(s)
    try:
        users.add(s, "alice", "editor")
        secret = team.files(s).password("alice").read_text().strip()
        url = f"{front.team_url(s)}/api/2.0/mlflow/experiments/search?max_results=1"
        ca = str(s.paths.tls / "ca.pem")
        codes, started = [], time.monotonic()
        for _ in range(GUESSES):
            r = requests.get(url, auth=("alice", "a-wrong-guess"), verify=ca, timeout=30)
            codes.append(r.status_code)
        lock = int(r.headers.get("Retry-After", 0))
        locked = requests.get(url, auth=("alice", secret), verify=ca, timeout=30).status_code
        time.sleep(lock + 1)
        after = requests.get(url, auth=("alice", secret), verify=ca, timeout=30).status_code
        return {
            "guesses": GUESSES,
            "codes": codes,
            "first_429": codes.index(429) + 1 if 429 in codes else None,
            "seconds": round(time.monotonic() - started, 1),
            "lock_s": lock,
            "right_password_while_locked": locked,
            "right_password_after_the_lock": after,
            "attempts": s.tracking.login_attempts,
        }
    finally:
        team.stop(s)
        tracking_server.stop(s)


def run() -> dict:
    base = Settings.from_env()
    use(tracking_server.ensure(base))
    with tempfile.TemporaryDirectory() as tmp:
        s = base.but(
            paths={"home": Path(tmp) / "serve", "data_dir": base.paths.data},
            serve={"port": free_port(), "workers": 2},
        )
        month = deploy.smoke_rides(s, "green", 1)[1]
        deploy.start(s, MODEL_NAME)
        try:
            tries = [asdict(kill_try(s, month, rides=5000, rate=500)) for _ in range(TRIES)]
            refused = refusals(s)
        finally:
            deploy.stop(s)
        guessed = guessing(Path(tmp) / "team")
    return {"machine": stamp(), "kill_9": tries, "refusals": refused, "guessing": guessed}


def markdown(r: dict) -> list[str]:
    g = r["guessing"]
    return [
        "# Serving and the team server under faults (`make bench-faults`)",
        "",
        f"{r['machine']}.",
        "",
        "A worker killed with -9 under 5,000 real rides at 500 a second, five tries:",
        "",
        *markdown_table(r["kill_9"], ["rides", "answered", "logged", "lost", "twice", "broken"]),
        "",
        "Hostile and nonsensical bodies, one request each, through the proxy:",
        "",
        *markdown_table(r["refusals"], ["input", "status", "message"]),
        "",
        f"Guessing a password from one address ({g['attempts']} wrong ones lock the pair): "
        f"{g['guesses']} guesses in {g['seconds']} s answered {g['codes']}; the first 429 at "
        f"guess {g['first_429']}, locked for {g['lock_s']} s. The right password meanwhile: "
        f"{g['right_password_while_locked']}; once the lock had passed: "
        f"{g['right_password_after_the_lock']}.",
    ]


def main() -> None:
    try:
        r = run()
    except DurationError as e:
        sys.exit(f"bench-faults: {e}")
    write("faults", r, markdown(r))


if __name__ == "__main__":
    main()
