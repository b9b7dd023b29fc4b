"""The `duration` command: `app` (the Typer app, also the API) and `main` (its entry point,
which turns errors into one line)."""

from duration.cli.app import app
from duration.cli.main import main

__all__ = ["app", "main"]
