"""The orchestrator's life: `duration automate start|status|stop|pause|resume`.

It is Dagster: a webserver (the UI, on 127.0.0.1:DURATION_AUTOMATE_PORT, which has no login
of its own) and a daemon (sensors, schedules, the run queue: one run at a time, a failed run
retried once). Its home is DURATION_HOME/.dagster (DAGSTER_HOME): its config, its storage
(SQLite), and each process's pid and log. Both run as process groups of their own, and stop
as such with a bounded wait (Dagster's processes can hang on a signal). Telemetry is off.

With the team server, it works as its own editor (`orchestrator`, password in a 0600 file),
keeps its storage in the project's PostgreSQL when the store is there (database `dagster`),
and its UI is reachable through the TLS front at /dagster/, by admins only.
"""

from __future__ import annotations

import sys
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from duration.automate import definitions as location
from duration.automate.assets import MODEL_ENV
from duration.automate.months import Cursor
from duration.automate.sensors import IN_FLIGHT, JOB, paused_marker
from duration.errors import DurationError
from duration.infra.daemon import Daemon
from duration.infra.files import tail, write_atomic
from duration.infra.net import LOOPBACK, port_in_use
from duration.registry.uris import require, version_in
from duration.server import pg_databases, postgres, team, tracking_server, users
from duration.server.front import DAGSTER_PREFIX
from duration.server.team import UserRole
from duration.settings import Settings
from duration.tracking.reap import reap

if TYPE_CHECKING:
    from dagster import DagsterInstance

ORCHESTRATOR = "orchestrator"  # its account on the team server: an editor
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
LOCATION = "duration"

INSTANCE_YAML = """\
# written by `duration automate start`
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 1
    dequeue_interval_seconds: 1  # a month's run starts within a second of its request
run_retries:
  enabled: true
  max_retries: 1
telemetry:
  enabled: false
nux:
  enabled: false
"""


@dataclass(frozen=True, kw_only=True)
class AutomateStatus:
    """`duration automate status`."""

    running: bool
    url: str
    pids: dict[str, int | None] = field(default_factory=dict)
    paused: bool = False
    sensor: str | None = None  # the month sensor's state
    last_tick: str | None = None  # ... its last tick: when, and what it did or why it skipped
    months_taken: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)  # "2023-05: STARTED"
    last_decision: dict[str, str] = field(default_factory=dict)
    problem: str | None = None


def home(settings: Settings) -> Path:
    return settings.paths.automate_state.resolve()


def url(settings: Settings) -> str:
    """The UI, on loopback (through the team server's front: https://FRONT/dagster/)."""
    return f"http://{LOOPBACK}:{settings.automate.port}{DAGSTER_PREFIX}"


@dataclass(frozen=True, kw_only=True)
class Team:
    """With the team server: the orchestrator's account (an editor) and its storage."""

    env: dict[str, str]  # its MLflow credentials (the password read from its 0600 file)
    storage: str = ""  # dagster.yaml's storage: the project's PostgreSQL, when the store is


def team_mode(settings: Settings) -> Team | None:
    """The orchestrator's place on the team server, if this home runs one."""
    if tracking_server.running_app(settings) != team.APP:
        return None
    env = users.account_env(settings, ORCHESTRATOR, UserRole.editor)
    store = settings.tracking.store_uri or ""
    if not store.startswith("postgresql"):
        return Team(env=env)
    db = pg_databases.libpq_uri(pg_databases.ensure_database(settings, store, "dagster"))
    if (pgpass := postgres.local_pgpass(settings)) is not None:
        db += f"?passfile={pgpass}"
    storage = f"storage:\n  postgres:\n    postgres_url: {db}\n"
    return Team(env=env, storage=storage)


def daemons(settings: Settings, name: str = "", mode: Team | None = None) -> list[Daemon]:
    bin_dir = Path(sys.executable).parent
    workspace = str(home(settings) / "workspace.yaml")
    env = {
        **settings.to_env(),
        **(mode.env if mode else {}),
        "DAGSTER_HOME": str(home(settings)),
        MODEL_ENV: name,
        location.FIRST_MONTH_ENV: _first_month(name) if name else "",
    }
    port = str(settings.automate.port)
    return [
        Daemon(
            name="daemon",
            argv=[str(bin_dir / "dagster-daemon"), "run", "-w", workspace],
            folder=home(settings),
            needle="dagster-daemon",
            env=env,
        ),
        Daemon(
            name="webserver",
            argv=[
                *(str(bin_dir / "dagster-webserver"), "-h", LOOPBACK, "-p", port),
                *("--path-prefix", DAGSTER_PREFIX, "-w", workspace),
            ],
            folder=home(settings),
            needle="dagster-webserver",
            env=env,
        ),
    ]


def _first_month(name: str) -> str:
    """The first partition: Production's first training month ("" with no Production: the
    course's; the sensor then waits for one, and says so)."""
    require(name, "check --name, or train and register one first (`make pipeline`)")
    production = version_in(name, "Production")
    return "" if production is None else production.tags.get("train_month", "").split("+")[0]


def _write_config(settings: Settings, mode: Team | None) -> None:
    folder = home(settings)
    folder.mkdir(parents=True, exist_ok=True)
    storage = mode.storage if mode else ""
    write_atomic(folder / "dagster.yaml", INSTANCE_YAML + storage, mode=0o600)
    workspace = (
        "load_from:\n"
        "  - python_module:\n"
        f"      module_name: {location.__name__}\n"
        f"      attribute: defs\n"
        f"      location_name: {LOCATION}\n"
        f"      executable_path: {sys.executable}\n"
    )
    write_atomic(folder / "workspace.yaml", workspace)


def instance(settings: Settings) -> DagsterInstance:
    """The orchestrator's own storage, read from this process."""
    from dagster import DagsterInstance  # deferred: Dagster takes a second or two to import

    return DagsterInstance.from_config(str(home(settings)))


def _fail_orphans(settings: Settings) -> list[str]:
    """Runs left in flight by an orchestrator that was killed: marked failed (the run queue
    then retries each once); MLflow runs their processes left RUNNING are ended too."""
    from dagster import DagsterRunStatus, RunsFilter  # deferred, as `instance`

    marked = []
    with instance(settings) as inst:
        stuck = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
        for run in inst.get_runs(filters=RunsFilter(statuses=stuck)):
            inst.report_run_failed(run, "the orchestrator stopped during this run: retried")
            marked.append(run.run_id)
    if marked:
        reap()
    return marked


def start(settings: Settings, name: str) -> AutomateStatus:
    """Start the orchestrator for model `name` unless it runs."""
    if any(d.pid() is not None for d in daemons(settings)):
        raise DurationError(
            f"the orchestrator already runs for this home ({url(settings)}): "
            "`duration automate status`, or `duration automate stop` first"
        )
    if port_in_use(settings.automate.port):
        raise DurationError(
            f"port {settings.automate.port} is taken by another program: the orchestrator's "
            "UI needs it; pick another with DURATION_AUTOMATE_PORT"
        )
    mode = team_mode(settings)
    _write_config(settings, mode)
    started = daemons(settings, name, mode)
    _fail_orphans(settings)
    for d in started:
        d.start(cwd=home(settings))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(settings):
        if any(d.exited() for d in started) or time.monotonic() > deadline:
            logs = "; ".join(f"{d.name}: {tail(d.log)[:160]}" for d in started)
            stop(settings)
            raise DurationError(f"the orchestrator did not start ({logs}): see {home(settings)}")
        time.sleep(0.5)
    return status(settings)


def _answers(settings: Settings) -> bool:
    """True when the UI answers (Dagster's webserver has `/server_info`, no `/health`)."""
    try:
        with urllib.request.urlopen(f"{url(settings)}/server_info", timeout=2.0) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:
        return False


def stop(settings: Settings) -> list[str]:
    """Stop the webserver and the daemon (and the runs they started), as process groups;
    what was running."""
    return [d.name for d in daemons(settings) if d.stop(STOP_TIMEOUT_S)]


def pause(settings: Settings, on: bool) -> None:
    """Pause (or resume) the month sensor and the fallback schedule."""
    marker = paused_marker(settings)
    if on:
        write_atomic(marker, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    else:
        marker.unlink(missing_ok=True)


def status(settings: Settings) -> AutomateStatus:
    """What runs, what the sensor last did, the months taken, runs in flight, the last
    decision."""
    pids = {d.name: d.pid() for d in daemons(settings)}
    running = all(pid is not None for pid in pids.values())
    base = AutomateStatus(
        running=running,
        url=url(settings),
        pids=pids,
        paused=paused_marker(settings).exists(),
        problem=None if running else "not running: `duration automate start`",
    )
    if not (home(settings) / "dagster.yaml").exists():
        return base
    return _with_storage(settings, base)


def _with_storage(settings: Settings, base: AutomateStatus) -> AutomateStatus:
    """`base` with what the orchestrator's storage says."""
    from dagster import AssetKey, RunsFilter  # deferred, as `instance`

    with instance(settings) as inst:
        runs = inst.get_runs(filters=RunsFilter(job_name=JOB, statuses=IN_FLIGHT))
        flying = [f"{r.tags.get('dagster/partition')}: {r.status.value}" for r in runs]
        sensor, last, taken = None, None, []
        for state in inst.all_instigator_state():
            if state.name != "tlc_months":
                continue
            sensor = state.status.value
            ticks = inst.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
            if ticks:
                t = ticks[0]
                when = time.strftime("%H:%M:%S", time.localtime(t.timestamp))
                said = t.skip_reason or (f"requested {', '.join(t.run_keys)}" if t.run_keys else "")
                last = f"{when} {t.status.value}: {said}".strip()
            data = getattr(state.instigator_data, "cursor", None)
            if data:
                taken = sorted(Cursor.from_json(data).digests)
        event = inst.get_latest_materialization_event(AssetKey("month_decision"))
        decision: dict[str, str] = {}
        if event is not None and event.asset_materialization is not None:
            m = event.asset_materialization
            decision = {"month": str(m.partition)} | {
                k: str(getattr(v, "value", v))
                for k, v in m.metadata.items()
                if k in ("verdict", "action", "production_version", "challenger_version")
            }
    return replace(
        base,
        sensor=sensor,
        last_tick=last,
        months_taken=taken,
        in_flight=flying,
        last_decision=decision,
    )
