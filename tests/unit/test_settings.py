"""Settings come from one place: defaults, then the environment, then flags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from duration.errors import DurationError, redact
from duration.server import tracking_server
from duration.server.pg_databases import libpq_uri
from duration.settings import DEFAULT_TLC_URL, ENV, Paths, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ENV:
        monkeypatch.delenv(var, raising=False)


def test_defaults():
    s = Settings.from_env()
    assert s == Settings()  # an empty environment is the defaults
    assert s.paths.data == Path("data") and s.paths.tlc_url == DEFAULT_TLC_URL
    assert s.tracking.url == "http://127.0.0.1:5000" and s.tracking.is_local
    assert s.paths.server_db == Path("mlflow.db") and s.paths.state == Path(".mlflow")
    assert s.paths.predictions == Path("data/predictions")
    assert s.serve.url == "http://127.0.0.1:5001"


def test_home_moves_every_path(monkeypatch, tmp_path):
    monkeypatch.setenv("DURATION_HOME", str(tmp_path))
    p = Settings.from_env().paths
    paths = [p.data, p.raw, p.processed, p.features, p.predictions, p.server_db, p.artifacts]
    paths += [p.state, p.serve_state, p.spark_state, p.pg_state]
    assert all(x.is_relative_to(tmp_path) for x in paths), paths


def test_environment_beats_defaults_and_flags_beat_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DURATION_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DURATION_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("DURATION_TLC_URL", "file:///mirror/")
    monkeypatch.setenv("MLFLOW_PORT", "5123")
    s = Settings.from_env()
    assert s.paths.data == tmp_path / "env-data"  # the data variable beats the home's data
    assert s.paths.server_db == tmp_path / "home" / "mlflow.db"
    assert s.paths.tlc_url == "file:///mirror" and s.tracking.url == "http://127.0.0.1:5123"
    flagged = s.but(paths={"data_dir": tmp_path / "flag-data"}, tracking={"uri": "http://h:1"})
    assert flagged.paths.data == tmp_path / "flag-data" and flagged.tracking.url == "http://h:1"
    assert not flagged.tracking.is_local
    assert s.but(paths={"data_dir": None}).paths.data == tmp_path / "env-data"  # None: not given


def test_an_empty_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv("MLFLOW_PORT", "")
    monkeypatch.setenv("DURATION_SPARK_MASTER", "")
    s = Settings.from_env()
    assert s.tracking.port == 5000 and s.spark.master == "local[*]"


def test_every_variable_sets_its_field(monkeypatch):
    """Each variable in ENV reaches the field it names (a value of the field's own type)."""
    values = {
        "home": "/h",
        "data_dir": "/d",
        "tlc_url": "file:///t",
        "lock_dir": "/l",
        "uri": "http://127.0.0.1:1",
        "store_uri": "sqlite:////s.db",
        "check_s": "2.5",
        "master": "local[2]",
        "os_user": "pg",
        "drift_threshold": "0.2",
        "drift_share": "0.3",
        "rmse_ratio": "1.2",
        "workers": "3",
        "log": "False",
        "flush_s": "0.5",
        "login_attempts": "7",
        "team_name": "mlflow.team.example",
        "approve": "manual",
        "alert_url": "http://127.0.0.1:9/alerts",
        "live": "canary",
        "live_weight": "30",
        "trials": "3",
        "window": "4",
        "poll_s": "5.0",
        "reconcile_s": "30.0",
        "login_window_s": "60.0",
        "login_lock_s": "2.5",
        "metrics": "False",
        "scrape_s": "2.5",
        "retention": "30d",
        "retention_size": "1GB",
    }
    for var, (_, name) in ENV.items():
        monkeypatch.setenv(var, values.get(name, "1234"))
    s = Settings.from_env()
    for var, (section, name) in ENV.items():
        got = getattr(getattr(s, section), name)
        assert str(got) == values.get(name, "1234"), var


def test_a_bad_switch_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("DURATION_SERVE_METRICS", "maybe")
    with pytest.raises(DurationError, match="DURATION_SERVE_METRICS='maybe' is not true or false"):
        Settings.from_env()


@pytest.mark.parametrize("port", ["0", "70000", "http"])
def test_a_bad_port_is_one_clear_line(monkeypatch, port):
    monkeypatch.setenv("MLFLOW_PORT", port)
    with pytest.raises(DurationError, match=f"MLFLOW_PORT={port!r} is not a port number"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("SERVE_PORT", "http", "SERVE_PORT='http' is not a port number: use 1-65535"),
        ("DURATION_SERVER_CHECK_S", "soon", "DURATION_SERVER_CHECK_S='soon' is not a number"),
        ("DURATION_SERVER_CHECK_S", "0", "out of range: use a number above 0 and at most 3600"),
        ("DURATION_PG_PORT", "5432x", "DURATION_PG_PORT='5432x' is not a port number"),
        ("DURATION_DRIFT_SHARE", "0", "DURATION_DRIFT_SHARE='0' is out of range"),
        ("DURATION_RMSE_RATIO", "11", "use a number above 1 and at most 10"),
        ("DURATION_DRIFT_THRESHOLD", "high", "DURATION_DRIFT_THRESHOLD='high' is not a number"),
    ],
)
def test_a_bad_value_is_one_clear_line_naming_its_variable(monkeypatch, var, value, needle):
    monkeypatch.setenv(var, value)
    with pytest.raises(DurationError, match=re.escape(needle)) as e:
        Settings.from_env()
    assert "\n" not in str(e.value)


def test_a_bad_flag_is_one_clear_line_naming_the_flag():
    with pytest.raises(DurationError, match=re.escape("--drift-share=1.5 is out of range")):
        Settings().but({"monitor.drift_share": "--drift-share"}, monitor={"drift_share": 1.5})


@pytest.mark.parametrize("value", ["mysql://me:s3cret@db/mlflow", "/tmp/mlflow.db"])
def test_a_store_that_is_not_a_database_is_refused_without_its_password(monkeypatch, value):
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", value)
    with pytest.raises(DurationError, match="is not a database.*use postgresql://") as e:
        Settings.from_env()
    assert "s3cret" not in str(e.value)  # a password in the URI is never echoed


def test_the_store_defaults_to_sqlite_in_home_and_the_environment_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("DURATION_HOME", str(tmp_path))
    local = tracking_server.local(Settings.from_env())
    assert local.store == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    uri = "postgresql://duration@127.0.0.1:5433/mlflow"
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", uri)
    assert tracking_server.local(Settings.from_env()).store == uri


def test_sections_are_frozen_and_built_by_keyword():
    s = Settings(paths=Paths(home=Path("/x")))
    with pytest.raises(Exception, match="frozen"):
        s.paths.home = Path("/y")  # type: ignore[misc]
    with pytest.raises(TypeError):
        Paths(Path("/x"))  # type: ignore[misc]
    assert hash(s) == hash(Settings(paths=Paths(home=Path("/x"))))  # usable as a key


def test_redact_hides_only_the_password():
    assert redact("postgresql+psycopg://u:p@ss@h:5/db") == "postgresql+psycopg://u:***@h:5/db"
    assert redact("postgresql://u@h:5/db") == "postgresql://u@h:5/db"
    assert libpq_uri("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
