"""The team server's app (`mlflow server --app-name duration-team`): MLflow's basic-auth app,
and the project's rules around it. Imported only by the server process.

- **Readers write nothing.** MLflow gives whoever creates an experiment or a registered
  model MANAGE on it, and lets any user create one while workspaces are off, whatever
  `default_permission` says. So a user who is neither an admin nor holds the editor role
  may only read: a request that is not a GET, HEAD or OPTIONS, nor a search, nor a GraphQL
  query (a mutation writes), gets 403 with a line that says why and what to do.
- **Users, roles and permissions belong to admins.** Every users, roles and permissions
  endpoint (REST and ajax-api, 2.0 and 3.0) refuses a non-admin, but for asking who one is
  (`users/current`, and its permissions). MLflow would let an editor grant permissions.
- **Guessing is slowed** (`duration.server.throttle`): after too many wrong passwords for
  one (user, client address), 429 with a growing delay. The client address is the TLS
  front's `X-Forwarded-For`, trusted only on requests that carry the front's own key
  (`X-Duration-Front`, from a 0600 file); else the connection's address.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from duration.server.front import ADMIN_CHECK
from duration.server.throttle import Policy, Throttle
from duration.settings import Settings

EDITOR = "editor"  # the role that writes (duration.server.team.UserRole.editor)
READ_METHODS = {"GET", "HEAD", "OPTIONS"}
TEAM_DIR = "DURATION_TEAM_DIR"  # the team server's folder: the front's key, the throttle
FRONT_HEADER = "X-Duration-Front"
# POSTs that only read (MLflow 3.17's, from mlflow.server.handlers.get_endpoints): the
# searches, the registry's latest versions, and batch reads
_READS = re.compile(r"/(search|search-datasets|get-latest-versions|batchGetInfos|batch-get)$")
_ACCOUNTS = re.compile(r"^/(?:api|ajax-api)/[23]\.0/mlflow/(?:users|roles)(?:/|$)")
_ONESELF = re.compile(r"^/(?:api|ajax-api)/[23]\.0/mlflow/users/current(?:/permissions)?$")
GRAPHQL = "/graphql"


def _writes(method: str, path: str, body: Callable[[], bytes]) -> bool:
    """True when the request changes something (`body`: its body, read only for GraphQL)."""
    if method in READ_METHODS or _READS.search(path):
        return False
    if path.endswith(GRAPHQL):
        return _mutates(body())
    return True


def _mutates(body: bytes) -> bool:
    """True when a GraphQL request holds a mutation (or cannot be read: then it may)."""
    from graphql import OperationType, parse  # deferred: the server process has graphql-core
    from graphql.error import GraphQLError

    try:
        query = json.loads(body or b"{}").get("query") or ""
        document = parse(query)
    except (ValueError, AttributeError, GraphQLError):
        return True
    kinds = [getattr(d, "operation", None) for d in document.definitions]
    return any(k is not OperationType.QUERY for k in kinds if k is not None) or not kinds


def _accounts(path: str) -> bool:
    """A users, roles or permissions endpoint that only an admin may call."""
    return bool(_ACCOUNTS.match(path)) and not _ONESELF.match(path)


def _refuse(status: int, message: str, **headers: str) -> Any:
    from flask import make_response  # deferred: the server process has Flask

    code = {403: "PERMISSION_DENIED", 429: "TOO_MANY_REQUESTS"}[status]
    response = make_response({"error_code": code, "message": message}, status)
    response.headers.update(headers)
    return response


def _roles_rule() -> Any:
    """A Flask before-request hook, after MLflow's (which has authenticated the user)."""
    from flask import request  # deferred: the server process has Flask
    from mlflow.server import auth

    if auth.is_unprotected_route(request.path):
        return None
    if request.authorization is None or not request.authorization.username:
        return None  # MLflow's own hook has answered 401 already
    accounts = _accounts(request.path)
    if not accounts and not _writes(request.method, request.path, request.get_data):
        return None
    user = auth.store.get_user(request.authorization.username)
    if user.is_admin:
        return None
    if accounts:
        return _refuse(
            403,
            f"PERMISSION_DENIED: {user.username} is not an admin, and {request.path} manages "
            "users, roles or permissions: ask an admin (`duration users ...` on the team "
            "server's host)",
        )
    if any(r.name == EDITOR for r in auth.store.list_user_roles(user.id)):
        return None
    return _refuse(
        403,
        f"PERMISSION_DENIED: {user.username} has READ only (role reader), and "
        f"{request.method} {request.path} writes: that needs EDIT, which the editor role "
        f"grants: ask an admin (`duration users role {user.username} editor`)",
    )


class Guard:
    """The throttle's two hooks: refuse a locked pair first, count the answer last."""

    def __init__(self, folder: Path, settings: Settings) -> None:
        t = settings.tracking
        policy = Policy(
            attempts=t.login_attempts, window_s=t.login_window_s, first_lock_s=t.login_lock_s
        )
        self.throttle = Throttle(folder / "throttle.db", policy)
        key = folder / "front.key"
        self.front_key = key.read_text().strip() if key.exists() else None

    def address(self) -> str:
        """The client's address: the front's X-Forwarded-For, if the front sent it."""
        from flask import request  # deferred: the server process has Flask

        given = request.headers.get(FRONT_HEADER, "")
        forwarded = request.headers.get("X-Forwarded-For", "")
        if self.front_key and forwarded and secrets.compare_digest(given, self.front_key):
            return forwarded.split(",")[-1].strip()
        return request.remote_addr or "unknown"

    def before(self) -> Any:
        from flask import g, request  # deferred: the server process has Flask

        creds = request.authorization
        if creds is None or not creds.username:
            return None
        g.duration_pair = (creds.username, self.address())
        state = self.throttle.state(*g.duration_pair)
        g.duration_counted = state.counted
        if state.locked_s > 0:
            wait = f"{state.locked_s:.0f}"
            return _refuse(
                429,
                f"too many wrong passwords for {creds.username} from this address: try again "
                f"in {wait} s (an admin can clear it: `duration users unlock {creds.username}`)",
                **{"Retry-After": wait},
            )
        return None

    def after(self, response: Any) -> Any:
        from flask import g  # deferred: the server process has Flask

        pair = g.get("duration_pair")
        if pair is None or response.status_code == 429:
            return response
        if response.status_code == 401:
            verdict = self.throttle.failed(*pair)
            if verdict.lock_s:
                print(
                    f"duration: team: too many wrong passwords for {pair[0]} from {pair[1]}: "
                    f"refused for {verdict.lock_s:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
        elif g.get("duration_counted"):
            self.throttle.succeeded(*pair)
        return response


def create_app(app: Any = None) -> Any:
    """MLflow's basic-auth app with the project's rules (an `mlflow.app` entry point)."""
    from mlflow.server import app as flask_app  # deferred: only the server imports Flask
    from mlflow.server.auth import create_app as basic_auth

    flask = app if app is not None else flask_app
    wrapped = basic_auth(flask)
    flask.before_request(_roles_rule)
    # MLflow's auth refuses an unmapped route to all but admins (fail-closed): so this one
    # answers admins only, and the TLS front asks it before the orchestrator's UI
    flask.add_url_rule(ADMIN_CHECK, "duration_admin_check", lambda: ("", 204))
    if folder := os.environ.get(TEAM_DIR):
        guard = Guard(Path(folder), Settings.from_env())
        flask.before_request_funcs.setdefault(None, []).insert(0, guard.before)
        flask.after_request(guard.after)
    return wrapped
