"""The team server: the tracking server with users, roles and TLS in front.

- **Authentication:** MLflow's basic auth, through the `duration-team` app
  (`duration.server.auth_app`). Its database is `mlflow_auth` in the store's PostgreSQL, or
  `mlflow-auth.db` next to a SQLite store.
- **Secrets:** the admin password, the Flask secret key, the auth config that holds them,
  and each user's password are 0600 files under `.mlflow/team/`. The server reads them from
  the config file and its environment, never from a URI, a command line or a log.
- **Roles,** onto MLflow's role-based permissions (a role's grant on `*` covers every
  experiment and registered model, new ones too): see GRANTS; `admin` is MLflow's admin
  flag (MANAGE on everything, and users). A reader's create is refused by
  the app (MLflow would let anyone create, and make them its owner).
- **TLS:** the front of `duration.server.front`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from duration.errors import DurationError
from duration.infra.files import write_atomic
from duration.infra.net import is_healthy, said
from duration.server import front, pg_databases, postgres, tracking_server
from duration.server.auth_app import TEAM_DIR
from duration.settings import Settings

APP = "duration-team"
ADMIN = "admin"


class UserRole(StrEnum):
    """What a team server user may do (not a serving arm's role)."""

    reader = "reader"
    editor = "editor"
    admin = "admin"  # MLflow's is_admin flag: MANAGE on everything, and the users


# What each role holds on every experiment and registered model ("*": new ones too). An
# editor needs MANAGE on registered models: MLflow lets only MANAGE remove an alias, and
# every stage move takes the `staging` alias off a version.
GRANTS = {
    UserRole.reader: {"experiment": "READ", "registered_model": "READ"},
    UserRole.editor: {"experiment": "EDIT", "registered_model": "MANAGE"},
}
AUTH_CACHE_S = 300
MIN_PASSWORD = 12  # MLflow's own sign-up form asks for 12
NAME_RULE = "letters, digits, '.', '_' or '-', 2 to 64 of them"


@dataclass(frozen=True)
class Files:
    """Where the team server keeps its secrets and its front (all under `folder`)."""

    folder: Path

    @property
    def admin_password(self) -> Path:
        return self.folder / "admin.password"

    @property
    def flask_key(self) -> Path:
        return self.folder / "flask.key"

    @property
    def ini(self) -> Path:
        return self.folder / "auth.ini"

    def password(self, user: str) -> Path:
        return self.folder / "users" / f"{user}.password"


def files(settings: Settings) -> Files:
    return Files(settings.paths.team_state)


def secret(path: Path, nbytes: int = 24) -> str:
    """The secret in `path` (0600), made once."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, secrets.token_urlsafe(nbytes) + "\n", mode=0o600)
    return path.read_text().strip()


def auth_database(settings: Settings, store: str) -> str:
    """The auth database's URI: STORE_auth beside the store's database in PostgreSQL
    (`mlflow_auth` for the local `mlflow`; created when missing, the password staying in
    pgpass), else `mlflow-auth.db` next to a SQLite store."""
    if store.startswith("postgresql"):
        name = urlsplit(store).path.strip("/") or postgres.DATABASE
        return pg_databases.ensure_database(settings, store, postgres.auth_name(name))
    db = Path(store.removeprefix("sqlite:///"))
    return tracking_server.sqlite_store(db.with_name("mlflow-auth.db"))


def write_ini(settings: Settings, store: str) -> Path:
    """The auth app's config (it holds the admin password: 0600)."""
    f = files(settings)
    text = (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {auth_database(settings, store)}\n"
        f"admin_username = {ADMIN}\n"
        f"admin_password = {secret(f.admin_password)}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # a password check (scrypt) costs ~0.3 s here: a verified one is kept AUTH_CACHE_S
        # (in the one worker, which drops a user's entries when the user changes)
        f"auth_cache_ttl_seconds = {AUTH_CACHE_S}\n"
    )
    return write_atomic(f.ini, text, mode=0o600)


def server_env(settings: Settings, store: str) -> dict[str, str]:
    """What the MLflow server's environment adds: where its auth config is, its Flask key."""
    f = files(settings)
    front.key(settings)  # made before the server starts: it reads it once
    t = settings.tracking
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(write_ini(settings, store).resolve()),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret(f.flask_key, 32),
        TEAM_DIR: str(f.folder.resolve()),
        # the server's throttle takes the starter's settings (`duration.server.throttle`)
        "DURATION_LOGIN_ATTEMPTS": str(t.login_attempts),
        "DURATION_LOGIN_WINDOW_S": str(t.login_window_s),
        "DURATION_LOGIN_LOCK_S": str(t.login_lock_s),
    }


# --- users and roles, through the server's REST API, as the admin ---------------------


def _admin(settings: Settings) -> tuple[str, tuple[str, str]]:
    f = files(settings)
    if not f.admin_password.exists():
        raise DurationError(
            f"no team server was set up under {settings.paths.home}: run "
            "`duration server start --team` first"
        )
    return settings.tracking.local_uri, (ADMIN, secret(f.admin_password))


def call(settings: Settings, method: str, path: str, **kw: Any) -> Any:
    """One admin request to the local MLflow server; its own message on failure."""
    base, auth = _admin(settings)
    try:
        r = requests.request(method, f"{base}{path}", auth=auth, timeout=30, **kw)
    except requests.RequestException:
        raise DurationError(
            f"the team server at {base} does not answer: `duration server start --team`"
        ) from None
    if r.status_code >= 400:
        raise DurationError(_said(r))
    return r.json() if r.content else {}


def _said(r: requests.Response) -> str:
    return f"the server refused it (HTTP {r.status_code}): {said(r)}"


def ensure_roles(settings: Settings) -> dict[UserRole, int]:
    """The `reader` and `editor` roles and their grants on `*`; their ids."""
    listed = call(settings, "GET", "/api/3.0/mlflow/roles/list", params={"workspace": "default"})
    have = {r["name"]: r for r in listed["roles"]}
    ids = {}
    for name, grants in GRANTS.items():
        role = (
            have.get(name)
            or call(
                settings,
                "POST",
                "/api/3.0/mlflow/roles/create",
                json={"name": name.value, "workspace": "default"},
            )["role"]
        )
        granted = {(p["resource_type"], p["resource_pattern"]) for p in role.get("permissions", [])}
        for kind, permission in grants.items():
            if (kind, "*") not in granted:
                grant = {"resource_type": kind, "resource_pattern": "*", "permission": permission}
                path = "/api/3.0/mlflow/roles/permissions/add"
                call(settings, "POST", path, json={"role_id": role["id"], **grant})
        ids[name] = int(role["id"])
    return ids


# --- the whole team server --------------------------------------------------------------


def start(settings: Settings, workers: int = 1) -> str:
    """The MLflow server with auth on 127.0.0.1:MLFLOW_PORT (started unless it runs), its
    roles, and the TLS front; returns the front's URL. (`workers` > 1: each keeps its own
    credential cache, so a changed password takes up to AUTH_CACHE_S in the others.)"""
    front.check_host(settings)
    front.check_port(settings)
    server = replace(tracking_server.local(settings), app=APP, workers=workers)
    answers = is_healthy(server.url)
    if answers and tracking_server.running_app(settings) != APP:
        raise DurationError(
            f"a tracking server without authentication answers at {server.url}: stop it "
            "(`duration server stop`), then start the team server"
        )
    if not answers:
        tracking_server.stop(settings)  # one left behind that no longer answers
        tracking_server.start(server, settings, env=server_env(settings, server.store))
    ensure_roles(settings)
    return front.start(settings)


def stop(settings: Settings) -> bool:
    """Stop the TLS front (the server behind it stops with `tracking_server.stop`)."""
    return front.stop(settings)
