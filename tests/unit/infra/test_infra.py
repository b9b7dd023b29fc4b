"""Infrastructure helpers that need no service running: PostgreSQL's reasons, the proxy's
config, ports and processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from duration.infra import postgres, proxy
from duration.infra.net import free_port, port_in_use
from duration.infra.proc import alive, gone, group_alive, stop_group
from duration.settings import Paths, Serve, Settings


def test_a_postgres_programs_reason_is_its_fatal_line_and_the_cause_before_it():
    log = (
        '2026-11-30 10:00:00.1 UTC [12] LOG:  invalid value for parameter "shared_buffers"\n'
        "2026-11-30 10:00:00.1 UTC [12] FATAL:  configuration file contains errors\n"
        "2026-11-30 10:00:00.2 UTC [12] LOG:  database system is shut down\n"
    )
    assert postgres.reason(log) == (
        'LOG: invalid value for parameter "shared_buffers" / '
        "FATAL: configuration file contains errors"
    )
    initdb = 'initdb: error: directory "/x" exists but is not empty\ninitdb: hint: remove it\n'
    assert postgres.reason(initdb) == 'initdb: error: directory "/x" exists but is not empty'
    assert postgres.reason("pg_ctl: could not start server\nExamine the log output.\n") == (
        "pg_ctl: could not start server Examine the log output."
    )
    assert postgres.reason("") == "no output"


ROUTES = {
    "production": proxy.Route(name="m", production_port=41234),
    "canary": proxy.Route(name="m", production_port=41234, candidate="canary",
                          candidate_port=41235, weight=20),
    "shadow": proxy.Route(name="m", production_port=41234, candidate="shadow",
                          candidate_port=41235),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(ROUTES))
def test_the_proxy_config_binds_loopback_only_and_nginx_takes_it(tmp_path, kind):
    s = Settings(paths=Paths(home=tmp_path), serve=Serve(port=5999))
    conf = proxy.write_conf(s, ROUTES[kind]).read_text()
    assert "listen 127.0.0.1:5999;" in conf and "server 127.0.0.1:41234 max_fails=0" in conf
    assert "listen" not in conf.replace("listen 127.0.0.1:5999;", "")  # nothing else listens
    if kind == "canary":
        assert 'split_clients "${client_key}" $arm { 20% canary; * production; }' in conf
        assert "server 127.0.0.1:41234 backup;" in conf  # a dead canary: Production answers
        assert "$http_x_client_id" in conf and "$http_x_ride_id" in conf
    else:
        assert "split_clients" not in conf
    assert ("mirror /_shadow;" in conf) == (kind == "shadow")
    if kind == "shadow":
        assert f"proxy_read_timeout {proxy.SHADOW_TIMEOUT_MS}ms;" in conf
    check = subprocess.run(proxy.command(s, "-t"), capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


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
