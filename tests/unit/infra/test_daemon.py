"""A background process of ours: running until it ends, whatever its command line says
while it starts (before exec, a child's command line is still its parent's)."""

from __future__ import annotations

import sys
import time

from duration.infra.daemon import Daemon


def test_a_child_runs_until_it_ends_whatever_its_command_line(tmp_path):
    d = Daemon(
        name="sleeper",
        argv=[sys.executable, "-c", "import time; time.sleep(60)"],
        folder=tmp_path,
        needle="not-in-its-command-line",  # as a child is, until it has exec'd its program
    )
    d.start()
    assert d.exited() is False and d.pid() is None
    assert d.stop(timeout=10) is True
    assert d.exited() is True and not d.pid_file.exists()


def test_one_that_ends_by_itself_is_seen_as_ended(tmp_path):
    d = Daemon(name="quick", argv=[sys.executable, "-c", "pass"], folder=tmp_path, needle="-c")
    d.start()
    deadline = time.monotonic() + 30
    while not d.exited():
        assert time.monotonic() < deadline, "never seen as ended"
        time.sleep(0.1)
    assert d.pid() is None
