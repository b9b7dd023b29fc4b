"""The scoring proxy's config: loopback only, the arms' routes, and nginx takes it."""

from __future__ import annotations

import subprocess

import pytest

from duration.infra import nginx
from duration.serving import proxy
from duration.serving.state import Role
from duration.settings import Paths, Serve, Settings

ROUTES = {
    "production": proxy.Route(production_port=41234),
    "canary": proxy.Route(
        production_port=41234, candidate=Role.canary, candidate_port=41235, weight=20
    ),
    "shadow": proxy.Route(production_port=41234, candidate=Role.shadow, candidate_port=41235),
}


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
    check = subprocess.run(nginx.command(s.paths.serve_state, "-t"), capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
