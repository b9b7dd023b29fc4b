"""Settings from one place: defaults, overridden by the environment, overridden by flags."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from duration.errors import DurationError

DEFAULT_TLC_URL = "https://d37ci6vzurychx.cloudfront.net"
DEFAULT_PORT = 5000
EXPERIMENT = "nyc-taxi-duration"
SEARCH_EXPERIMENT = "nyc-taxi-duration-search"
EVAL_EXPERIMENT = "nyc-taxi-duration-evaluation"
PROMOTION_EXPERIMENT = "nyc-taxi-duration-promotion"
DEPLOY_EXPERIMENT = "nyc-taxi-duration-deployments"
MONITOR_EXPERIMENT = "nyc-taxi-duration-monitoring"
CYCLE_EXPERIMENT = "nyc-taxi-duration-cycle"
DEFAULT_SERVE_PORT = 5001
MODEL_NAME = "nyc-taxi-duration"
# The search's budget: on a training month larger than BUDGET_ROWS rides, trials (and the
# tree baselines) fit on a seeded sample of BUDGET_ROWS rides and stop early on as many
# validation rides; the best REFIT trials are then refit on every ride and scored on the whole
# validation month, and only those refits log a model. A green month (~70k rides) is whole.
BUDGET_ROWS = 150_000
REFIT = 2
MIN_DURATION, MAX_DURATION = 1.0, 60.0

LOCK_DIR = Path(tempfile.gettempdir()) / "duration-locks"

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class Color(StrEnum):
    """TLC trip record types."""

    green = "green"
    yellow = "yellow"
    fhv = "fhv"


class FeatureSet(StrEnum):
    """Named feature sets (see duration.features)."""

    course = "course"
    default = "default"


class ModelKind(StrEnum):
    """Estimators that `duration train` can fit."""

    linear = "linear"
    lasso = "lasso"
    ridge = "ridge"
    random_forest = "random_forest"
    xgboost = "xgboost"


# The pipeline's baselines: (model, feature set; None = the pipeline's own set).
BASELINES = [
    (ModelKind.linear, FeatureSet.course),
    (ModelKind.linear, None),
    (ModelKind.ridge, None),
    (ModelKind.random_forest, None),
    (ModelKind.xgboost, None),
]


def parse_baselines(text: str) -> tuple[ModelKind, ...] | None:
    """`--baselines`: "all" (None), "none" (no baseline), or model kinds joined by commas."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    if words == ["all"]:
        return None
    if words == ["none"]:
        return ()
    kinds = {k.value for k, _ in BASELINES}
    if not words or set(words) - kinds:
        raise DurationError(
            f"--baselines {text!r}: use all, none, or some of {', '.join(sorted(kinds))} "
            "joined by commas"
        )
    return tuple(ModelKind(w) for w in dict.fromkeys(words))


def check_month(month: str, flag: str = "--month") -> str:
    """Return `month` if it is YYYY-MM, else raise a one-line error naming the flag."""
    if not _MONTH.match(month or ""):
        raise DurationError(f"{flag} {month!r} is not a month: use YYYY-MM, for example 2021-01")
    return month


def span_months(train: str, flag: str | None = None) -> list[str]:
    """The months of a training span: one month, or several joined by "+" (oldest first).
    With `flag`, each must be YYYY-MM, else a one-line error naming the flag."""
    months = train.split("+")
    if flag is not None:
        for month in months:
            check_month(month, flag)
    return months


def last_month(train: str) -> str:
    """The newest month of a training span."""
    return span_months(train)[-1]


def _env_port(name: str = "MLFLOW_PORT", default: int = DEFAULT_PORT) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise DurationError(f"{name}={raw!r} is not a port number: use 1-65535, e.g. {default}")
    return int(raw)


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise DurationError(
            f"{name}={raw!r} is not a number of seconds: use 0-3600, e.g. {default}"
        )
    return value


# Monitoring thresholds: (setting, environment variable, lowest, highest) - see `monitor`.
THRESHOLDS = {
    "drift_threshold": ("DURATION_DRIFT_THRESHOLD", 0.0, 1.0),
    "drift_share": ("DURATION_DRIFT_SHARE", 0.0, 1.0),
    "rmse_ratio": ("DURATION_RMSE_RATIO", 1.0, 10.0),
}


def check_threshold(name: str, value: float, where: str) -> float:
    """`value` if it lies in the threshold's range, else a one-line error naming `where`."""
    _, lo, hi = THRESHOLDS[name]
    if not lo < value <= hi:
        raise DurationError(
            f"{where}={value!r} is out of range: use a number above {lo} and at most {hi}"
        )
    return value


def _env_thresholds() -> dict[str, float]:
    out = {}
    for name, (env, _, _) in THRESHOLDS.items():
        if (raw := os.environ.get(env)) is not None:
            try:
                value = float(raw)
            except ValueError:
                raise DurationError(f"{env}={raw!r} is not a number") from None
            out[name] = check_threshold(name, value, env)
    return out


def redact(uri: str) -> str:
    """`uri` with any password replaced by ***, for messages and state files."""
    return re.sub(r"(://[^:/@]+:)[^/]*@", r"\1***@", uri)


def _env_store_uri() -> str | None:
    raw = os.environ.get("MLFLOW_BACKEND_STORE_URI") or None
    if raw and not re.match(r"^(sqlite|postgresql(\+\w+)?)://", raw):
        raise DurationError(
            f"MLFLOW_BACKEND_STORE_URI={redact(raw)!r} is not a database this project "
            "runs: use postgresql://USER@HOST:PORT/DB (see `duration db start`) or sqlite:///PATH"
        )
    return raw


# MLflow's client retries a request 7 times over minutes by default; a dead server should
# stop the work in seconds. MLflow's usage telemetry is off: offline, its thread gives up and
# deletes an environment variable while a request reads the environment, and that request
# fails with KeyError '_MLFLOW_TELEMETRY_SESSION_ID' (seen here on a monitoring run). The
# environment still wins (`setdefault`).
MLFLOW_CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


@dataclass(frozen=True)
class Settings:
    """Where data and state live, where TLC files come from, and which tracking server to use.

    Every path derives from `home` (env DURATION_HOME, default: the working directory):
    data under `home/data` (or DURATION_DATA_DIR), the local server's SQLite file, artifacts
    and pid/log files beside it.
    """

    home: Path = Path(".")
    data_dir: Path = Path("data")
    tlc_url: str = DEFAULT_TLC_URL
    port: int = DEFAULT_PORT
    tracking_uri: str = f"http://127.0.0.1:{DEFAULT_PORT}"
    spark_master: str = "local[*]"
    spark_data_dir: Path | None = None  # the data folder as executors see it (shared storage)
    spark_master_port: int = 7077
    spark_master_ui_port: int = 8080
    spark_worker_ui_port: int = 8081
    serve_port: int = DEFAULT_SERVE_PORT
    server_check_s: float = 10.0  # long commands check the tracking server this often
    lock_dir: Path = LOCK_DIR  # shared by every home on this host
    backend_store_uri: str | None = None  # the local server's store; None: SQLite in home
    pg_port: int | None = None  # the local PostgreSQL's port; None: the last one, or 5432
    # Monitoring (defaults measured over every month of the mirror; see the README):
    drift_threshold: float = 0.1  # a column drifts at this KS statistic or JS distance
    drift_share: float = 0.5  # verdict `drift` from this share of drifted input columns
    rmse_ratio: float = 1.1  # verdict `degraded` above this RMSE / the version's test RMSE

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        """Defaults, then environment variables, then the non-None `overrides` (flags)."""
        port = _env_port()
        home = Path(overrides.get("home") or os.environ.get("DURATION_HOME") or ".")
        values = {
            "home": home,
            "data_dir": Path(os.environ.get("DURATION_DATA_DIR") or home / "data"),
            "tlc_url": os.environ.get("DURATION_TLC_URL", DEFAULT_TLC_URL).rstrip("/"),
            "port": port,
            "tracking_uri": os.environ.get("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}"),
            "spark_master": os.environ.get("DURATION_SPARK_MASTER") or "local[*]",
            "spark_data_dir": Path(os.environ["DURATION_SPARK_DATA_DIR"])
            if os.environ.get("DURATION_SPARK_DATA_DIR")
            else None,
            "spark_master_port": _env_port("SPARK_MASTER_PORT", 7077),
            "spark_master_ui_port": _env_port("SPARK_MASTER_WEBUI_PORT", 8080),
            "spark_worker_ui_port": _env_port("SPARK_WORKER_WEBUI_PORT", 8081),
            "serve_port": _env_port("SERVE_PORT", DEFAULT_SERVE_PORT),
            "server_check_s": _env_seconds("DURATION_SERVER_CHECK_S", 10.0),
            "lock_dir": Path(os.environ.get("DURATION_LOCK_DIR") or LOCK_DIR),
            "backend_store_uri": _env_store_uri(),
            "pg_port": _env_port("DURATION_PG_PORT", 5432)
            if os.environ.get("DURATION_PG_PORT")
            else None,
            **_env_thresholds(),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def server_db(self) -> Path:
        """The local tracking server's SQLite file."""
        return self.home / "mlflow.db"

    @property
    def store_uri(self) -> str:
        """The local tracking server's backend store: MLFLOW_BACKEND_STORE_URI, else SQLite."""
        return self.backend_store_uri or f"sqlite:///{self.server_db.resolve()}"

    @property
    def pg_state(self) -> Path:
        """The local PostgreSQL cluster: data, log, pgpass and backups."""
        return self.home / ".postgres"

    @property
    def server_artifacts(self) -> Path:
        """The local tracking server's artifact folder."""
        return self.home / "mlartifacts"

    @property
    def server_state(self) -> Path:
        """The local tracking server's pid and log files."""
        return self.home / ".mlflow"

    @property
    def serve_state(self) -> Path:
        """The scoring service's state, pid, proxy config and logs, beside the server's."""
        return self.server_state / "serve"

    @property
    def serve_url(self) -> str:
        """Where clients reach the served model (the proxy in front of the scoring process)."""
        return f"http://127.0.0.1:{self.serve_port}"

    @property
    def spark_state(self) -> Path:
        """The local Spark cluster's pid and log files, and its worker's folder."""
        return self.home / ".spark"

    @property
    def executor_data_dir(self) -> Path:
        """The data folder as Spark executors see it: shared storage, or this one."""
        return (self.spark_data_dir or self.data_dir).resolve()

    @property
    def local_uri(self) -> str:
        """The URI of the project's own local server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_local_server(self) -> bool:
        """True when the tracking URI is the project's own local default server."""
        return self.tracking_uri.rstrip("/") in {
            self.local_uri,
            f"http://localhost:{self.port}",
        }

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def processed_dir(self) -> Path:
        return self.data_dir / "processed"

    @property
    def features_dir(self) -> Path:
        return self.data_dir / "features"

    @property
    def predictions_dir(self) -> Path:
        return self.data_dir / "predictions"
