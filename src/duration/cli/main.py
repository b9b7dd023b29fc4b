"""The entry point of `duration`: run the app, turning every error into one line on stderr
with a non-zero exit code (no traceback; DURATION_DEBUG=1 shows it)."""

from __future__ import annotations

import os
import sys

import typer
from typer.exceptions import TyperException

from duration.cli.app import app
from duration.cli.runtime import prepare_process
from duration.errors import DurationError, Stopped, one_line


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
        print(f"duration: error: {_what(e)}: {one_line(e)} (set DURATION_DEBUG=1 for the "
              "traceback)", file=sys.stderr)  # fmt: skip
        return 1


def _what(e: Exception) -> str:
    """MLflow's errors are named as such; any other by its type."""
    module = type(e).__module__ or ""
    return "MLflow" if module.startswith("mlflow") else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
