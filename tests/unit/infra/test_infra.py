"""OS plumbing that needs no service running: ports and processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from duration.infra.net import free_port, port_in_use
from duration.infra.proc import alive, gone, group_alive, stop_group


def test_a_free_port_is_free_and_a_listening_one_is_not():
    import socket

    port = free_port()
    assert not port_in_use(port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert port_in_use(port)


def test_a_process_group_is_stopped_whole():
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )  # a parent and its child, in a process group of their own
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 30  # until the child has exec'd: its command line is its own
    while not alive(proc.pid, "time.sleep") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive(proc.pid, "time.sleep") and group_alive(proc.pid)
    stop_group(proc.pid, timeout=5)
    assert not group_alive(proc.pid) and not alive(proc.pid)
    assert gone(os.uname().nodename, str(proc.pid), 0) and not gone("elsewhere", "1", 0)
