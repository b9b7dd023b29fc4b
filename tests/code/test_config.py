"""Settings come from one place: defaults, then the environment, then flags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from duration.config import DEFAULT_TLC_URL, Settings
from duration.errors import DurationError

VARS = ["DURATION_HOME", "DURATION_DATA_DIR", "DURATION_TLC_URL", "MLFLOW_PORT"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in [*VARS, "MLFLOW_TRACKING_URI"]:
        monkeypatch.delenv(var, raising=False)


def test_defaults():
    s = Settings.from_env()
    assert s.data_dir == Path("data") and s.tlc_url == DEFAULT_TLC_URL
    assert s.tracking_uri == "http://127.0.0.1:5000" and s.is_local_server
    assert s.server_db == Path("mlflow.db") and s.server_state == Path(".mlflow")
    assert s.predictions_dir == Path("data/predictions")


def test_home_moves_every_path(monkeypatch, tmp_path):
    monkeypatch.setenv("DURATION_HOME", str(tmp_path))
    s = Settings.from_env()
    paths = [s.data_dir, s.raw_dir, s.processed_dir, s.features_dir, s.predictions_dir]
    paths += [s.server_db, s.server_artifacts, s.server_state]
    assert all(p.is_relative_to(tmp_path) for p in paths), paths


def test_environment_beats_defaults_and_flags_beat_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DURATION_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DURATION_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("DURATION_TLC_URL", "file:///mirror/")
    monkeypatch.setenv("MLFLOW_PORT", "5123")
    s = Settings.from_env()
    assert s.data_dir == tmp_path / "env-data"  # the data variable beats the home's data
    assert s.server_db == tmp_path / "home" / "mlflow.db"
    assert s.tlc_url == "file:///mirror" and s.tracking_uri == "http://127.0.0.1:5123"
    flagged = Settings.from_env(data_dir=tmp_path / "flag-data", tracking_uri="http://h:1")
    assert flagged.data_dir == tmp_path / "flag-data" and flagged.tracking_uri == "http://h:1"
    assert not flagged.is_local_server
    assert Settings.from_env(data_dir=None).data_dir == tmp_path / "env-data"  # None: not given


@pytest.mark.parametrize("port", ["0", "70000", "http"])
def test_a_bad_port_is_one_clear_line(monkeypatch, port):
    monkeypatch.setenv("MLFLOW_PORT", port)
    with pytest.raises(DurationError, match=f"MLFLOW_PORT={port!r}"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("SERVE_PORT", "http", "SERVE_PORT='http' is not a port number"),
        ("DURATION_SERVER_CHECK_S", "soon", "DURATION_SERVER_CHECK_S='soon' is not a number"),
        ("DURATION_SERVER_CHECK_S", "0", "use 0-3600"),
    ],
)
def test_bad_serving_and_watch_settings_are_one_clear_line(monkeypatch, var, value, needle):
    monkeypatch.setenv(var, value)
    with pytest.raises(DurationError, match=re.escape(needle)):
        Settings.from_env()


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("DURATION_PG_PORT", "5432x", "DURATION_PG_PORT='5432x' is not a port number"),
        ("MLFLOW_BACKEND_STORE_URI", "mysql://me:s3cret@db/mlflow", "is not a database"),
        ("MLFLOW_BACKEND_STORE_URI", "/tmp/mlflow.db", "use postgresql://"),
    ],
)
def test_bad_store_settings_are_one_clear_line(monkeypatch, var, value, needle):
    monkeypatch.setenv(var, value)
    with pytest.raises(DurationError, match=re.escape(needle)) as e:
        Settings.from_env()
    assert "s3cret" not in str(e.value)  # a password in the URI is never echoed


def test_the_store_defaults_to_sqlite_in_home_and_the_environment_wins(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    monkeypatch.setenv("DURATION_HOME", str(tmp_path))
    assert Settings.from_env().store_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    uri = "postgresql://duration@127.0.0.1:5433/mlflow"
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", uri)
    assert Settings.from_env().store_uri == uri
    assert Settings.from_env().pg_state == tmp_path / ".postgres"


def test_redact_hides_only_the_password():
    from duration.config import redact
    from duration.db import libpq_uri

    assert redact("postgresql+psycopg://u:p@ss@h:5/db") == "postgresql+psycopg://u:***@h:5/db"
    assert redact("postgresql://u@h:5/db") == "postgresql://u@h:5/db"
    assert libpq_uri("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
