"""A worker group that no serving state names (its deployer stopped while starting it) is
found by its model's folder, and `serve stop` stops it; another home's group is left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from duration.infra.proc import group_alive
from duration.serving import service, workers
from duration.settings import Paths, Settings


def fake_group(s: Settings) -> subprocess.Popen:
    """A process that looks like a group's supervisor: the app in its command line, and a
    spec naming a model under `s`'s serving state."""
    spec = {"model": str(s.paths.serve_state / "models" / "m-v3")}
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", workers.APP],
        env={**os.environ, workers.SPEC_ENV: json.dumps(spec)},
        start_new_session=True,
    )


def test_serve_stop_stops_a_stray_group_of_its_home_only(tmp_path):
    mine = Settings(paths=Paths(home=tmp_path / "mine"))
    other = Settings(paths=Paths(home=tmp_path / "other"))
    a, b = fake_group(mine), fake_group(other)
    try:
        assert workers.strays(mine, set()) == [a.pid]
        assert workers.strays(mine, {a.pid}) == []
        stopped = service.stop(mine)
        assert stopped == [f"a stray worker group ({a.pid})"]
        a.wait(timeout=30)
        assert not group_alive(a.pid) and b.poll() is None
    finally:
        for p in (a, b):
            p.kill()
            p.wait()
