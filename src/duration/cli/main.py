"""The entry point of `duration`: run the app, turning every error into one line on stderr
with a non-zero exit code (no traceback; DURATION_DEBUG=1 shows it)."""

from __future__ import annotations

import os
import re
import sys

import typer
from typer.exceptions import TyperException

from duration.cli.app import app
from duration.cli.runtime import prepare_process
from duration.errors import DurationError, Stopped, one_line
from duration.server import tracking_server
from duration.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with `argv` (default: the process's arguments); return the exit code."""
    prepare_process()
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=argv, prog_name="duration", standalone_mode=False)
        return rc if isinstance(rc, int) else 0  # typer.Exit(n) comes back as n
    except typer.Exit as e:
        return int(e.exit_code)
    except TyperException as e:
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx else ""
        print(f"duration: error: {one_line(e.format_message())}{hint}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, typer.Abort):
        print("duration: interrupted", file=sys.stderr)
        return 130
    except Stopped as e:
        print(f"duration: stopped: {one_line(e)}", file=sys.stderr)
        return 130
    except DurationError as e:
        print(f"duration: error: {one_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if os.environ.get("DURATION_DEBUG"):
            raise
        if (line := refused(e) or server_failed(e)) is not None:
            print(f"duration: error: {line}", file=sys.stderr)
            return 1
        print(
            f"duration: error: {_what(e)}: {one_line(e)} (set DURATION_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


_ENDPOINT = re.compile(r"endpoint (/\S+)")


def refused(e: Exception) -> str | None:
    """One line for a request the tracking server refused for want of permission (403) or
    of credentials (401), naming what was refused and what to do; None for any other error."""
    text = str(e)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if "error code 401" in text:
        return (
            f"the tracking server refused the credentials of {user or 'no user'} (401): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    if "PERMISSION_DENIED" not in text and "error code 403" not in text:
        return None
    if "has READ only" in text:  # the team server's own line says it all
        return one_line(text[text.rindex("PERMISSION_DENIED: ") + 19 :])
    found = _ENDPOINT.search(text)
    what = found.group(1) if found else "a request"
    who = user or "this user"
    return (
        f"the tracking server refused {who} {what} (403): writing needs EDIT, which the "
        f"editor role grants (a reader has READ): ask an admin (`duration users role {who} "
        "editor`)"
    )


def server_failed(e: Exception) -> str | None:
    """One line with the server's own reason when the local tracking server failed a
    request (its log says why: a full artifact disk, its database gone); else None."""
    text = str(e)
    if "/api/2.0/" not in text or not any(k in text for k in ("500", "failed with exception")):
        return None
    try:
        reason = tracking_server.failure_reason(Settings.from_env())
    except DurationError:
        return None
    return None if reason is None else f"the tracking server failed a request: {reason}"


def _what(e: Exception) -> str:
    """MLflow's errors are named as such; any other by its type."""
    module = type(e).__module__ or ""
    return "MLflow" if module.startswith("mlflow") else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
