"""Prometheus, Alertmanager and the alert relay: their configs, start, status and stop.

`duration observe start` writes Prometheus's config under DURATION_HOME (the scrape targets
are the serving state's `targets.json`, which serving rewrites at each deploy, so a deploy
needs no restart here), checks the rules with `promtool` first, and starts the three on
127.0.0.1, each in a process group of its own. Prometheus keeps its data for a bounded time
and size. Alertmanager runs alone (its cluster port is off) and posts to the relay
(`duration.observe.relay`), which sends each alert on to the alert channel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duration.errors import DurationError
from duration.infra.daemon import Daemon
from duration.infra.files import tail, write_atomic
from duration.infra.net import LOOPBACK, port_in_use
from duration.serving.state import targets_file, write_targets
from duration.settings import Settings

RULES = Path(__file__).with_name("rules.yml")
JOB = "duration-serving"  # the rules' `up{job=...}`
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
BINARIES = {  # command -> the Debian package that has it
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
}
# Alertmanager: one message per (alert, arm) group, a repeat after a day, and its resolution.
GROUP_WAIT = "5s"
GROUP_INTERVAL = "30s"  # a group's news (a resolution) waits at most this
REPEAT_INTERVAL = "24h"


@dataclass(frozen=True, kw_only=True)
class ObserveStatus:
    """What runs, where, and what Prometheus scrapes."""

    running: dict[str, int | None]  # name -> pid
    prometheus: str
    alertmanager: str
    targets: list[str]
    firing: list[str]


def binary(name: str) -> str:
    """The path of a Debian program it needs, or a one-line error saying how to install it."""
    found = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if found is None:
        raise DurationError(
            f"{name} is not installed: `make install` adds it (or apt-get install {BINARIES[name]})"
        )
    return found


def url(port: int) -> str:
    """Where one of the three answers, on loopback."""
    return f"http://{LOOPBACK}:{port}"


def folder(settings: Settings) -> Path:
    """Prometheus's and Alertmanager's configs, data, pids and logs."""
    return settings.paths.state / "observe"


def prometheus_config(settings: Settings) -> str:
    """Prometheus's config: the serving groups from the targets file, the rules, Alertmanager."""
    o = settings.observe
    config = {
        "global": {
            "scrape_interval": f"{o.scrape_s:g}s",
            "evaluation_interval": f"{o.scrape_s:g}s",
        },
        "rule_files": [str(RULES)],
        "alerting": {
            "alertmanagers": [
                {"static_configs": [{"targets": [f"{LOOPBACK}:{o.alertmanager_port}"]}]}
            ]
        },
        "scrape_configs": [
            {
                "job_name": JOB,
                "honor_labels": True,  # a worker's own arm and version labels win
                "file_sd_configs": [
                    {"files": [str(targets_file(settings))], "refresh_interval": "5s"}
                ],
            }
        ],
    }
    return json.dumps(config, indent=2) + "\n"  # YAML is a superset of JSON


def alertmanager_config(settings: Settings) -> str:
    """Alertmanager's config: everything to the relay, grouped by alert and arm, resolved too."""
    config = {
        "route": {
            "receiver": "duration",
            "group_by": ["alertname", "arm"],
            "group_wait": GROUP_WAIT,
            "group_interval": GROUP_INTERVAL,
            "repeat_interval": REPEAT_INTERVAL,
        },
        "receivers": [
            {
                "name": "duration",
                "webhook_configs": [
                    {"url": f"{url(settings.observe.relay_port)}/alerts", "send_resolved": True}
                ],
            }
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def check_rules(rules: Path = RULES) -> None:
    """`promtool check rules`: a malformed rule file is refused, with promtool's own line."""
    done = subprocess.run(
        [binary("promtool"), "check", "rules", str(rules)], capture_output=True, text=True
    )
    if done.returncode != 0:
        said = [ln.strip() for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
        raise DurationError(f"the alert rules in {rules} do not load: {said[-1] if said else '?'}")


def daemons(settings: Settings) -> list[Daemon]:
    o, where = settings.observe, folder(settings)
    return [
        Daemon(
            name="prometheus",
            argv=[
                binary("prometheus"),
                f"--config.file={where / 'prometheus.yml'}",
                f"--storage.tsdb.path={where / 'prometheus-data'}",
                f"--storage.tsdb.retention.time={o.retention}",
                f"--storage.tsdb.retention.size={o.retention_size}",
                f"--web.listen-address={LOOPBACK}:{o.prometheus_port}",
            ],
            folder=where,
            needle="prometheus",
        ),
        Daemon(
            name="alertmanager",
            argv=[
                binary("prometheus-alertmanager"),
                f"--config.file={where / 'alertmanager.yml'}",
                f"--storage.path={where / 'alertmanager-data'}",
                f"--web.listen-address={LOOPBACK}:{o.alertmanager_port}",
                "--cluster.listen-address=",  # alone: no gossip port on any address
            ],
            folder=where,
            needle="alertmanager",
        ),
        Daemon(
            name="relay",
            argv=[sys.executable, "-m", "duration.observe.relay"],
            folder=where,
            needle="duration.observe.relay",
            env=settings.to_env(),
        ),
    ]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as r:  # noqa: S310 - loopback http
            return bool(r.status == 200)
    except OSError:
        return False


def _ports(settings: Settings) -> dict[str, tuple[int, str]]:
    o = settings.observe
    return {
        "prometheus": (o.prometheus_port, "DURATION_PROMETHEUS_PORT"),
        "alertmanager": (o.alertmanager_port, "DURATION_ALERTMANAGER_PORT"),
        "relay": (o.relay_port, "DURATION_ALERT_RELAY_PORT"),
    }


def start(settings: Settings) -> ObserveStatus:
    """Start Prometheus, Alertmanager and the relay, unless they run."""
    started = daemons(settings)
    if any(d.pid() is not None for d in started):
        raise DurationError(
            "Prometheus runs for this home already: `duration observe status`, or "
            "`duration observe stop` first"
        )
    for name, (port, var) in _ports(settings).items():
        if port_in_use(port):
            raise DurationError(
                f"port {port} is taken by another program: {name} needs it; pick another with {var}"
            )
    check_rules()
    where = folder(settings)
    where.mkdir(parents=True, exist_ok=True)
    write_atomic(where / "prometheus.yml", prometheus_config(settings))
    write_atomic(where / "alertmanager.yml", alertmanager_config(settings))
    if not targets_file(settings).exists():
        write_targets(settings, None)  # nothing serves yet: Prometheus waits for the file
    for d in started:
        d.start(cwd=where)
    o = settings.observe
    ready = [
        f"{url(o.prometheus_port)}/-/ready",
        f"{url(o.alertmanager_port)}/-/ready",
        f"{url(o.relay_port)}/health",
    ]
    deadline = time.monotonic() + START_TIMEOUT_S
    while not all(_ready(u) for u in ready):
        if any(d.exited() for d in started) or time.monotonic() > deadline:
            logs = "; ".join(f"{d.name}: {tail(d.log)[:160]}" for d in started)
            stop(settings)
            raise DurationError(f"monitoring did not start ({logs}): see {where}")
        time.sleep(0.3)
    return status(settings)


def stop(settings: Settings) -> list[str]:
    """Stop the three, as process groups; what was running."""
    return [d.name for d in daemons_or_none(settings) if d.stop(STOP_TIMEOUT_S)]


def daemons_or_none(settings: Settings) -> list[Daemon]:
    """The daemons, even where a binary is gone (to stop what runs)."""
    try:
        return daemons(settings)
    except DurationError:
        return []


def query(settings: Settings, promql: str) -> list[dict[str, Any]]:
    """A PromQL instant query's result (vector entries), or a one-line error."""
    base = url(settings.observe.prometheus_port)
    asked = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(asked, timeout=10.0) as r:  # noqa: S310 - loopback http
            body = json.loads(r.read())
    except OSError as e:
        raise DurationError(
            f"Prometheus at {base} did not answer ({e}): `duration observe start`"
        ) from e
    return list(body["data"]["result"])


def status(settings: Settings) -> ObserveStatus:
    """What runs, the targets Prometheus scrapes, and the alerts firing."""
    o = settings.observe
    running = {d.name: d.pid() for d in daemons_or_none(settings)}
    targets, firing = [], []
    if running.get("prometheus"):
        try:
            with urllib.request.urlopen(
                f"{url(o.prometheus_port)}/api/v1/targets", timeout=5.0
            ) as r:  # noqa: S310
                active = json.loads(r.read())["data"]["activeTargets"]
            targets = [
                f"{t['labels'].get('arm', '?')} {t['scrapeUrl']} {t['health']}" for t in active
            ]
            with urllib.request.urlopen(
                f"{url(o.prometheus_port)}/api/v1/alerts", timeout=5.0
            ) as r:  # noqa: S310
                alerts = json.loads(r.read())["data"]["alerts"]
            firing = [f"{a['labels']['alertname']} {a['state']}" for a in alerts]
        except (OSError, ValueError, KeyError):
            pass
    return ObserveStatus(
        running=running,
        prometheus=url(o.prometheus_port),
        alertmanager=url(o.alertmanager_port),
        targets=targets,
        firing=firing,
    )
