"""`duration users`: the team server's users and their roles (run on its host)."""

from __future__ import annotations

import sys

import typer

from duration.cli import render
from duration.cli.runtime import settings
from duration.errors import DurationError
from duration.server import users as u

users_app = typer.Typer(
    no_args_is_help=True,
    help="The team server's users: reader, editor or admin (docs/guides/team-server.md).",
)
Stdin = typer.Option(
    False, "--password-stdin", help="Read the password from stdin (else one is generated)."
)


def _stdin(flag: bool) -> str | None:
    if not flag:
        return None
    text = sys.stdin.readline().rstrip("\n")
    if not text:
        raise DurationError("--password-stdin read nothing: pipe the password in")
    return text


def _told(name: str, path: object) -> None:
    if path is None:
        typer.echo(f"  {name}: with the password given")
    else:
        typer.echo(f"  {name}: its password is in {path} (0600): hand it over privately")


@users_app.command("add")
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The user's name."),
    role: str = typer.Option("reader", "--role", help="reader, editor or admin."),
    password_stdin: bool = Stdin,
) -> None:
    """Add a user with a role."""
    path = u.add(settings(ctx), name, role, _stdin(password_stdin))
    typer.echo(f"added {name} as {role}")
    _told(name, path)


@users_app.command("list")
def list_(ctx: typer.Context) -> None:
    """Every user and its role."""
    rows = [{"user": x.name, "role": x.shown} for x in u.users(settings(ctx))]
    typer.echo(render.table(rows, ["user", "role"]))


@users_app.command("remove")
def remove(ctx: typer.Context, name: str = typer.Argument(..., help="The user's name.")) -> None:
    """Remove a user (never the last admin)."""
    u.remove(settings(ctx), name)
    typer.echo(f"removed {name}")


@users_app.command("passwd")
def passwd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The user's name."),
    password_stdin: bool = Stdin,
) -> None:
    """Give a user a new password."""
    path = u.passwd(settings(ctx), name, _stdin(password_stdin))
    typer.echo(f"changed the password of {name}")
    _told(name, path)


@users_app.command("role")
def role(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The user's name."),
    new: str = typer.Argument(..., help="reader, editor or admin."),
) -> None:
    """Give a user another role."""
    user = u.set_role(settings(ctx), name, new)
    typer.echo(f"{user.name} is now {user.shown}")


@users_app.command("unlock")
def unlock(ctx: typer.Context, name: str = typer.Argument(..., help="The user's name.")) -> None:
    """End a user's lock after too many wrong passwords, from every address."""
    cleared = u.unlock(settings(ctx), name)
    typer.echo(
        f"{name}: {cleared} locked address(es) cleared" if cleared else f"{name} was not locked"
    )
