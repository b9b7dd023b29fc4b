"""Load from `wrk`, Debian's C load generator: a fixed POST body on keep-alive connections
for a few seconds, its figures read back as JSON (a Lua `done` hook writes them).

Python client threads are bound by the GIL before a fast server is; wrk is not, so what it
measures is the server (on the same cores: the figures are a floor).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from duration.errors import DurationError

SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n{{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def binary() -> str:
    """The wrk executable, or a one-line error saying how to install it."""
    found = shutil.which("wrk")
    if found is None:
        raise DurationError("wrk is not installed: run `make install` (or `apt-get install wrk`)")
    return found


def run(url: str, body: bytes, connections: int, seconds: float, threads: int = 1) -> dict:
    """POST `body` to `url` from `connections` keep-alive connections for `seconds`: the
    requests a second, p50/p99/max latency in ms, and the failed requests."""
    with tempfile.TemporaryDirectory() as tmp:
        body_path, script = Path(tmp) / "body.json", Path(tmp) / "post.lua"
        body_path.write_bytes(body)
        script.write_text(SCRIPT.format(body=body_path))
        cmd = [
            binary(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0:
        raise DurationError(f"wrk failed on {url}: {proc.stderr.strip()[:200]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    failed = sum(r[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "requests": r["requests"],
        "requests_per_s": round(r["requests"] / (r["duration_us"] / 1e6), 1),
        "p50_ms": round(r["p50_us"] / 1000, 2),
        "p99_ms": round(r["p99_us"] / 1000, 2),
        "max_ms": round(r["max_us"] / 1000, 2),
        "failed": failed,
    }
