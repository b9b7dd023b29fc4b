"""Settings from one place: defaults, then the environment, then flags.

Seven sections: paths, tracking, spark, serve, postgres, monitor, automate. Each default is
written once, on its field; `ENV` names the environment variable that sets each field. Every
path derives from `paths.home` (env DURATION_HOME, default: the working directory). Values are
checked (pydantic) wherever they come from, and a bad one is refused in one line that
names the variable or flag.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from duration.errors import DurationError, redact

Port = Annotated[int, Field(gt=0, lt=65536)]
DEFAULT_TLC_URL = "https://d37ci6vzurychx.cloudfront.net"
LOOPBACK = "127.0.0.1"


class Section(BaseModel):
    """A frozen, validated group of settings, built by keyword."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Paths(Section):
    """Where data and state live, and where TLC files come from."""

    home: Path = Path(".")
    data_dir: Path | None = None  # None: home/data
    tlc_url: str = DEFAULT_TLC_URL
    lock_dir: Path = Path(tempfile.gettempdir()) / "duration-locks"  # shared by every home

    @field_validator("tlc_url")
    @classmethod
    def _no_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @property
    def data(self) -> Path:
        """The data folder: raw, processed, features, predictions."""
        return self.data_dir if self.data_dir is not None else self.home / "data"

    @property
    def raw(self) -> Path:
        return self.data / "raw"

    @property
    def processed(self) -> Path:
        return self.data / "processed"

    @property
    def features(self) -> Path:
        return self.data / "features"

    @property
    def predictions(self) -> Path:
        return self.data / "predictions"

    @property
    def state(self) -> Path:
        """The local tracking server's pid, log and store files (`.mlflow/`)."""
        return self.home / ".mlflow"

    @property
    def server_db(self) -> Path:
        """The local tracking server's SQLite file."""
        return self.home / "mlflow.db"

    @property
    def artifacts(self) -> Path:
        """The local tracking server's artifact folder."""
        return self.home / "mlartifacts"

    @property
    def team_state(self) -> Path:
        """The team server's secrets (0600), auth config and TLS front."""
        return self.state / "team"

    @property
    def tls(self) -> Path:
        """The team server's CA and certificate (`.mlflow/tls/`)."""
        return self.state / "tls"

    @property
    def serve_state(self) -> Path:
        """The scoring service's state, pids, proxy config and logs, beside the server's."""
        return self.state / "serve"

    @property
    def serve_log(self) -> Path:
        """The prediction log: one parquet file per worker flush."""
        return self.serve_state / "predictions"

    @property
    def deployer_state(self) -> Path:
        """The deployer's pid, log, webhook secret (0600) and failed steps."""
        return self.serve_state / "deployer"

    @property
    def alerts_log(self) -> Path:
        """Every alert sent, one JSON line each (`.mlflow/alerts.jsonl`)."""
        return self.state / "alerts.jsonl"

    @property
    def automate_state(self) -> Path:
        """The orchestrator's home (DAGSTER_HOME): its storage, pids, logs and switches."""
        return self.home / ".dagster"

    @property
    def spark_state(self) -> Path:
        """The local Spark cluster's pid and log files, and its worker's folder."""
        return self.home / ".spark"

    @property
    def pg_state(self) -> Path:
        """The local PostgreSQL cluster: data, log, pgpass and backups."""
        return self.home / ".postgres"


_STORE = re.compile(r"^(sqlite|postgresql(\+\w+)?)://")


class Tracking(Section):
    """Which tracking server to use, and the local one's store."""

    port: Port = 5000  # the local server's
    uri: str | None = None  # None: the local server, http://127.0.0.1:port
    store_uri: str | None = None  # the local server's store; None: SQLite in home
    check_s: float = Field(10.0, gt=0, le=3600)  # long commands check the server this often
    team_port: Port = 5443  # the team server's TLS front (`server start --team`)
    team_host: str = LOOPBACK  # ... and the address it binds (beyond loopback: auth + TLS)
    team_name: str | None = None  # ... and the host name clients use (in its certificate)
    login_attempts: int = Field(10, ge=1, le=1000)  # wrong passwords that lock (user, address)
    login_window_s: float = Field(300.0, gt=0, le=86_400)  # ... within this long
    login_lock_s: float = Field(30.0, gt=0, le=86_400)  # the first lock; each next one doubles

    @field_validator("store_uri")
    @classmethod
    def _a_database(cls, v: str | None) -> str | None:
        if v and not _STORE.match(v):
            raise ValueError(
                "is not a database this project runs: use postgresql://USER@HOST:PORT/DB "
                "(see `duration db start`) or sqlite:///PATH"
            )
        return v or None

    @property
    def local_uri(self) -> str:
        """The URI of the project's own local server."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """The tracking server every command talks to."""
        return self.uri or self.local_uri

    @property
    def is_local(self) -> bool:
        """True when the tracking server is the project's own local default one."""
        return self.url.rstrip("/") in {self.local_uri, f"http://localhost:{self.port}"}


class Spark(Section):
    """The Spark master for `--backend spark`, and the ports of the local cluster."""

    master: str = "local[*]"
    data_dir: Path | None = None  # the data folder as executors see it (shared storage)
    master_port: Port = 7077
    master_ui_port: Port = 8080
    worker_ui_port: Port = 8081


def _cores() -> int:
    return os.cpu_count() or 1


class Serve(Section):
    """Where clients reach the served model, how many workers answer, and its log."""

    port: Port = 5001
    workers: int = Field(default_factory=_cores, ge=1, le=64)  # scoring worker processes
    log: bool = True  # record every served ride in the prediction log
    flush_s: float = Field(1.0, gt=0, le=60)  # a worker writes its log this often
    max_rides: int = Field(5_000, ge=1, le=100_000)  # rides one request may hold
    metrics: bool = True  # each worker group serves /metrics to Prometheus, on loopback

    @property
    def url(self) -> str:
        """The proxy in front of the scoring processes."""
        return f"http://{LOOPBACK}:{self.port}"


class Postgres(Section):
    """The local PostgreSQL cluster."""

    port: Port | None = None  # None: the last port used, else 5432, else a free one
    os_user: str = "postgres"  # as root, the unprivileged account it runs as


class Monitor(Section):
    """The thresholds of a monitoring verdict (measured over the mirror's months)."""

    drift_threshold: float = Field(0.1, gt=0, le=1)  # a column drifts at this KS / JS score
    drift_share: float = Field(0.5, gt=0, le=1)  # verdict `drift` from this share of columns
    rmse_ratio: float = Field(1.1, gt=1, le=10)  # `degraded` above this RMSE / test RMSE


class Automate(Section):
    """Level 4: the orchestrator, the deployer that follows the registry, and the alerts."""

    port: Port = 3000  # the orchestrator's UI (Dagster's webserver), on 127.0.0.1
    poll_s: float = Field(60.0, ge=1, le=86_400)  # the sensor looks for new TLC months this often
    approve: Literal["auto", "manual"] = "auto"  # manual: a promotion or finish waits for a person
    hook_port: Port = 5005  # the deployer's webhook receiver, on 127.0.0.1
    reconcile_s: float = Field(120.0, ge=1, le=86_400)  # serving against the aliases, this often
    alert_url: str | None = None  # where alerts are posted (JSON); none: only the alert log
    # The cycle's own, checked by `duration.ops.specs.CycleRequest` (the one place of its rules):
    live: str = "off"  # how the cycle puts a challenger live: off, canary or shadow
    live_weight: int = 20  # a live canary's share of clients, %
    trials: int = 10  # the cycle's search when it retrains
    window: int = 2  # labelled months it retrains on (the newest validates)

    @property
    def deployer_url(self) -> str:
        """The deployer on this host (GET /health)."""
        return f"http://{LOOPBACK}:{self.hook_port}"

    @property
    def hook_url(self) -> str:
        """Where MLflow delivers the registry's webhooks to the deployer."""
        return f"{self.deployer_url}/hook"


class Observe(Section):
    """Prometheus and Alertmanager, started by `duration observe start`, on 127.0.0.1."""

    prometheus_port: Port = 9090
    alertmanager_port: Port = 9093
    relay_port: Port = 9095  # Alertmanager's webhook, turned into the alert channel's format
    scrape_s: float = Field(15.0, ge=1, le=300)  # how often the worker groups are scraped
    retention: str = "15d"  # Prometheus keeps this long, and at most retention_size:
    retention_size: str = "512MB"


ENV: dict[str, tuple[str, str]] = {  # environment variable -> (section, field)
    "DURATION_HOME": ("paths", "home"),
    "DURATION_DATA_DIR": ("paths", "data_dir"),
    "DURATION_TLC_URL": ("paths", "tlc_url"),
    "DURATION_LOCK_DIR": ("paths", "lock_dir"),
    "MLFLOW_PORT": ("tracking", "port"),
    "MLFLOW_TRACKING_URI": ("tracking", "uri"),
    "MLFLOW_BACKEND_STORE_URI": ("tracking", "store_uri"),
    "DURATION_SERVER_CHECK_S": ("tracking", "check_s"),
    "DURATION_TEAM_PORT": ("tracking", "team_port"),
    "DURATION_TEAM_HOST": ("tracking", "team_host"),
    "DURATION_TEAM_NAME": ("tracking", "team_name"),
    "DURATION_LOGIN_ATTEMPTS": ("tracking", "login_attempts"),
    "DURATION_LOGIN_WINDOW_S": ("tracking", "login_window_s"),
    "DURATION_LOGIN_LOCK_S": ("tracking", "login_lock_s"),
    "DURATION_SPARK_MASTER": ("spark", "master"),
    "DURATION_SPARK_DATA_DIR": ("spark", "data_dir"),
    "SPARK_MASTER_PORT": ("spark", "master_port"),
    "SPARK_MASTER_WEBUI_PORT": ("spark", "master_ui_port"),
    "SPARK_WORKER_WEBUI_PORT": ("spark", "worker_ui_port"),
    "SERVE_PORT": ("serve", "port"),
    "SERVE_WORKERS": ("serve", "workers"),
    "DURATION_SERVE_LOG": ("serve", "log"),
    "DURATION_SERVE_FLUSH_S": ("serve", "flush_s"),
    "DURATION_SERVE_MAX_RIDES": ("serve", "max_rides"),
    "DURATION_SERVE_METRICS": ("serve", "metrics"),
    "DURATION_PG_PORT": ("postgres", "port"),
    "DURATION_PG_OS_USER": ("postgres", "os_user"),
    "DURATION_DRIFT_THRESHOLD": ("monitor", "drift_threshold"),
    "DURATION_DRIFT_SHARE": ("monitor", "drift_share"),
    "DURATION_RMSE_RATIO": ("monitor", "rmse_ratio"),
    "DURATION_AUTOMATE_PORT": ("automate", "port"),
    "DURATION_AUTOMATE_POLL_S": ("automate", "poll_s"),
    "DURATION_AUTOMATE_APPROVE": ("automate", "approve"),
    "DURATION_DEPLOY_HOOK_PORT": ("automate", "hook_port"),
    "DURATION_RECONCILE_S": ("automate", "reconcile_s"),
    "DURATION_ALERT_URL": ("automate", "alert_url"),
    "DURATION_CYCLE_LIVE": ("automate", "live"),
    "DURATION_CYCLE_LIVE_WEIGHT": ("automate", "live_weight"),
    "DURATION_CYCLE_TRIALS": ("automate", "trials"),
    "DURATION_CYCLE_WINDOW": ("automate", "window"),
    "DURATION_PROMETHEUS_PORT": ("observe", "prometheus_port"),
    "DURATION_ALERTMANAGER_PORT": ("observe", "alertmanager_port"),
    "DURATION_ALERT_RELAY_PORT": ("observe", "relay_port"),
    "DURATION_SCRAPE_S": ("observe", "scrape_s"),
    "DURATION_PROMETHEUS_RETENTION": ("observe", "retention"),
    "DURATION_PROMETHEUS_RETENTION_SIZE": ("observe", "retention_size"),
}
SECRET = {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_TRACKING_URI", "DURATION_ALERT_URL"}


class Settings(Section):
    """Every setting, by section. `Settings()` is the defaults; `from_env` reads the
    environment; `but` applies flags."""

    paths: Paths = Paths()
    tracking: Tracking = Tracking()
    spark: Spark = Spark()
    serve: Serve = Serve()
    postgres: Postgres = Postgres()
    monitor: Monitor = Monitor()
    automate: Automate = Automate()
    observe: Observe = Observe()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults, overridden by the environment variables in `ENV` (empty means unset)."""
        environ = os.environ if environ is None else environ
        given: dict[str, dict[str, Any]] = {}
        names: dict[tuple[str, str], str] = {}
        for var, (section, name) in ENV.items():
            if value := environ.get(var):
                given.setdefault(section, {})[name] = value
                names[(section, name)] = var
        return _build(cls(), given, lambda key, raw: f"{names[key]}={_shown(names[key], raw)}")

    def but(self, flags: dict[str, str] | None = None, **sections: dict[str, Any]) -> Settings:
        """These settings with the non-None values of `sections` ({section: {field: value}})
        applied and checked; `flags` names the flag of each field ({"monitor.rmse_ratio":
        "--rmse-ratio"}) for the one-line refusal."""
        given = {
            s: {k: v for k, v in values.items() if v is not None} for s, values in sections.items()
        }
        flags = flags or {}

        def where(key: tuple[str, str], raw: object) -> str:
            return f"{flags.get('.'.join(key), '.'.join(key))}={raw!r}"

        return _build(self, given, where)

    def to_env(self) -> dict[str, str]:
        """These settings as the environment variables of `ENV`, for a process this one
        starts (`from_env` there gives them back; paths are made absolute)."""
        out: dict[str, str] = {}
        for var, (section, name) in ENV.items():
            value = getattr(getattr(self, section), name)
            if value is None:
                continue
            if isinstance(value, Path):
                value = value.resolve()
            out[var] = str(value).lower() if isinstance(value, bool) else str(value)
        return out


def _shown(var: str, raw: object) -> str:
    return repr(redact(str(raw)) if var in SECRET else raw)


Where = Callable[[tuple[str, str], object], str]  # names a (section, field)'s given value


def _build(base: Settings, given: dict[str, dict[str, Any]], where: Where) -> Settings:
    """`base` with the `given` fields replaced, each section validated; a bad value is one
    DurationError naming `where((section, field), raw)`."""
    sections = {}
    for section, values in given.items():
        current = getattr(base, section)
        try:
            sections[section] = type(current).model_validate({**current.model_dump(), **values})
        except ValidationError as e:
            err = e.errors()[0]
            key = (section, str(err["loc"][0]))
            raise DurationError(_explain(where(key, values[key[1]]), err, current, key[1])) from e
    return base.model_copy(update=sections)


def _explain(where: str, err: ErrorDetails, section: Section, name: str) -> str:
    """One line: what is wrong with the value, and what to give instead."""
    field = type(section).model_fields[name]
    if err["type"] == "value_error":
        return f"{where} {err.get('ctx', {}).get('error')}"
    if err["type"] == "literal_error":
        return f"{where} is not a choice: use {err.get('ctx', {}).get('expected')}"
    if name == "port" or name.endswith("_port"):
        return f"{where} is not a port number: use 1-65535, e.g. {field.default or 5432}"
    if err["type"] == "bool_parsing":
        return f"{where} is not true or false: use true or false, e.g. {str(field.default).lower()}"
    what = "a number of seconds" if name.endswith("_s") else "a number"
    if err["type"].endswith("_parsing"):
        return f"{where} is not {what}: use a number, e.g. {field.default}"
    bounds = {k: getattr(m, k) for m in field.metadata for k in _WORDS if hasattr(m, k)}
    rule = " and ".join(f"{_WORDS[k]} {v}" for k, v in bounds.items())
    return f"{where} is out of range: use a number {rule}, e.g. {field.default}"


_WORDS = {"gt": "above", "ge": "at least", "lt": "below", "le": "at most"}
