"""The team server's users: add, list, remove, change a password or a role.

Run on the server's host, as its admin (the admin password is read from its 0600 file). A
generated password goes in a 0600 file under `.mlflow/team/users/`, and only the file's
path is printed. Each change is checked before anything is written, and a change the
server refuses halfway is undone, so a refusal leaves the users as they were.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duration.errors import DurationError
from duration.infra.files import write_atomic
from duration.server import team
from duration.server.team import UserRole
from duration.server.throttle import Throttle
from duration.settings import Settings

_NAME = re.compile(r"^[A-Za-z0-9._-]{2,64}$")
USERS = "/api/2.0/mlflow/users"


@dataclass(frozen=True, kw_only=True)
class User:
    """A user of the team server, and its role."""

    name: str
    role: UserRole | None  # None: a user of no role of this project's (made elsewhere)

    @property
    def shown(self) -> str:
        return self.role.value if self.role is not None else "none"


def _role_of(entry: dict[str, Any]) -> UserRole | None:
    if entry.get("is_admin"):
        return UserRole.admin
    names = {r["name"] for r in entry.get("roles", [])}
    return next((r for r in (UserRole.editor, UserRole.reader) if r in names), None)


def users(settings: Settings) -> list[User]:
    """Every user, with its role."""
    listed = team.call(settings, "GET", f"{USERS}/list")["users"]
    return [User(name=u["username"], role=_role_of(u)) for u in listed]


def _find(settings: Settings, name: str) -> User:
    for u in users(settings):
        if u.name == name:
            return u
    raise DurationError(f"there is no user {name!r} on the team server: `duration users list`")


def check_password(name: str, password: str) -> None:
    """The rule: at least MIN_PASSWORD characters, not made of the user's name."""
    if len(password) < team.MIN_PASSWORD or name.lower() in password.lower():
        raise DurationError(
            f"that password is too weak: it needs at least {team.MIN_PASSWORD} characters and "
            "must not contain the user's name (or leave out --password-stdin to get one made)"
        )


def _check_role(role: str, given_as: str = "") -> UserRole:
    try:
        return UserRole(role)
    except ValueError:
        names = ", ".join(r.value for r in UserRole)
        raise DurationError(f"{given_as}{role!r} is not a role: use one of {names}") from None


def _check_new(settings: Settings, name: str, role: str) -> UserRole:
    if not _NAME.match(name):
        raise DurationError(f"{name!r} is not a user name: use {team.NAME_RULE}")
    checked = _check_role(role, "--role ")
    if any(u.name == name for u in users(settings)):
        raise DurationError(
            f"user {name!r} exists already: `duration users role {name} ROLE` changes its "
            f"role, `duration users passwd {name}` its password"
        )
    return checked


def _password_file(settings: Settings, name: str, password: str | None) -> tuple[str, Path | None]:
    """The password to set, and the 0600 file it is written to when it was generated."""
    if password is not None:
        check_password(name, password)
        return password, None
    made = secrets.token_urlsafe(18)
    return made, team.files(settings).password(name)


def _keep(path: Path | None, password: str) -> Path | None:
    """A generated password, once the server has it, in its 0600 file."""
    if path is not None:
        write_atomic(path, password + "\n", mode=0o600)
    return path


def _grant(settings: Settings, name: str, role: UserRole, ids: dict[UserRole, int]) -> None:
    """Give `name` exactly `role`."""
    admin = {"username": name, "is_admin": role is UserRole.admin}
    team.call(settings, "PATCH", f"{USERS}/update-admin", json=admin)
    listed = team.call(
        settings, "GET", "/api/3.0/mlflow/users/roles/list", params={"username": name}
    )
    held = {r["id"] for r in listed["roles"]}
    for other, role_id in ids.items():
        if other != role and role_id in held:
            body = {"username": name, "role_id": role_id}
            team.call(settings, "DELETE", "/api/3.0/mlflow/roles/unassign", json=body)
    if role in ids and ids[role] not in held:
        body = {"username": name, "role_id": ids[role]}
        team.call(settings, "POST", "/api/3.0/mlflow/roles/assign", json=body)


def add(settings: Settings, name: str, role: str, password: str | None = None) -> Path | None:
    """A new user with `role`; returns the file of its generated password (None when the
    password was given)."""
    checked = _check_new(settings, name, role)
    password, path = _password_file(settings, name, password)
    ids = team.ensure_roles(settings)
    team.call(settings, "POST", f"{USERS}/create", json={"username": name, "password": password})
    try:
        _grant(settings, name, checked, ids)
    except DurationError:
        team.call(settings, "DELETE", f"{USERS}/delete", json={"username": name})
        raise
    return _keep(path, password)


def _not_the_last_admin(settings: Settings, name: str, doing: str) -> None:
    everyone = users(settings)
    admins = [u.name for u in everyone if u.role is UserRole.admin]
    if admins == [name] or name == team.ADMIN:
        raise DurationError(
            f"cannot {doing} {name!r}: it is "
            + ("the server's own admin" if name == team.ADMIN else "the last admin")
            + ", and the team server needs one (make another admin first, if it is not "
            "the server's own)"
        )


def remove(settings: Settings, name: str) -> None:
    """Remove a user (never the last admin, nor the server's own)."""
    user = _find(settings, name)
    if user.role is UserRole.admin or name == team.ADMIN:
        _not_the_last_admin(settings, name, "remove")
    team.call(settings, "DELETE", f"{USERS}/delete", json={"username": name})
    team.files(settings).password(name).unlink(missing_ok=True)


def passwd(settings: Settings, name: str, password: str | None = None) -> Path | None:
    """A new password for `name`; returns the file of a generated one."""
    _find(settings, name)
    if name == team.ADMIN:
        raise DurationError(
            f"the server's own admin keeps its generated password "
            f"({team.files(settings).admin_password}): make users for people instead"
        )
    password, path = _password_file(settings, name, password)
    body = {"username": name, "password": password}
    team.call(settings, "PATCH", f"{USERS}/update-password", json=body)
    return _keep(path, password)


def set_role(settings: Settings, name: str, role: str) -> User:
    """Give `name` the role `role` (never taking the last admin's away)."""
    checked = _check_role(role)
    user = _find(settings, name)
    if user.role is UserRole.admin and checked is not UserRole.admin:
        _not_the_last_admin(settings, name, "take the admin role from")
    _grant(settings, name, checked, team.ensure_roles(settings))
    return User(name=name, role=checked)


def unlock(settings: Settings, name: str) -> int:
    """Clear `name`'s wrong-password counts and locks (`duration.server.throttle`); how many
    addresses it had."""
    _find(settings, name)
    return Throttle(team.files(settings).folder / "throttle.db").clear(name)


def account_env(settings: Settings, name: str, role: UserRole) -> dict[str, str]:
    """A service's own account on the team server (made once, with a generated password in
    its 0600 file), as the environment its MLflow client reads: never on a command line."""
    path = team.files(settings).password(name)
    if name not in {u.name for u in users(settings)} or not path.exists():
        if name in {u.name for u in users(settings)}:
            passwd(settings, name)
        else:
            add(settings, name, role.value)
    return {
        "MLFLOW_TRACKING_USERNAME": name,
        "MLFLOW_TRACKING_PASSWORD": path.read_text().strip(),
    }
