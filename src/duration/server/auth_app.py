"""The team server's app (`mlflow server --app-name duration-team`): MLflow's basic-auth app,
and one rule more.

MLflow gives whoever creates an experiment or a registered model MANAGE on it, and lets
any user create one while workspaces are off, whatever `default_permission` says. So a
reader could write after all. Here a user who is neither an admin nor holds the editor
role may only read: every request that is not a GET, HEAD or OPTIONS, nor a search, gets
403 with a line that says why and what to do. Imported only by the server process.
"""

from __future__ import annotations

import re
from typing import Any

EDITOR = "editor"  # the role that writes (duration.server.team.UserRole.editor)
READ_METHODS = {"GET", "HEAD", "OPTIONS"}
# POSTs that only read (MLflow 3.17's, from mlflow.server.handlers.get_endpoints): the
# searches, the registry's latest versions, and batch reads
_READS = re.compile(r"/(search|search-datasets|get-latest-versions|batchGetInfos|batch-get)$")


def _writes(method: str, path: str) -> bool:
    return method not in READ_METHODS and not _READS.search(path)


def _readers_write_nothing() -> Any:
    """A Flask before-request hook, after MLflow's (which has authenticated the user)."""
    from flask import make_response, request  # deferred: the server process has Flask
    from mlflow.server import auth

    if not _writes(request.method, request.path) or auth.is_unprotected_route(request.path):
        return None
    if request.authorization is None or not request.authorization.username:
        return None  # MLflow's own hook has answered 401 already
    user = auth.store.get_user(request.authorization.username)
    if user.is_admin or any(r.name == EDITOR for r in auth.store.list_user_roles(user.id)):
        return None
    message = (
        f"PERMISSION_DENIED: {user.username} has READ only (role reader), and "
        f"{request.method} {request.path} writes: that needs EDIT, which the editor role "
        f"grants: ask an admin (`duration users role {user.username} editor`)"
    )
    body = {"error_code": "PERMISSION_DENIED", "message": message}
    return make_response(body, 403)


def create_app(app: Any = None) -> Any:
    """MLflow's basic-auth app with the readers' rule added (an `mlflow.app` entry point)."""
    from mlflow.server import app as flask_app  # deferred: only the server imports Flask
    from mlflow.server.auth import create_app as basic_auth

    flask = app if app is not None else flask_app
    wrapped = basic_auth(flask)
    flask.before_request(_readers_write_nothing)
    return wrapped
