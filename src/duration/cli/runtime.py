"""What a command needs around its work: the tracking server (ensured and connected), a
clean stop on Ctrl-C and SIGTERM, a watchdog on the server, and the process's setup.

Signal handling lives here and only here.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from duration.infra.files import write_atomic
from duration.infra.net import is_healthy
from duration.registry.uris import quiet_stage_notice
from duration.server import tracking_server
from duration.settings import Settings
from duration.tracking import client

SERVER_MISSES = 3  # checks in a row without an answer: the tracking server is gone


def settings(ctx: typer.Context) -> Settings:
    """The command's settings, made by the root callback."""
    return ctx.obj


def prepare_process() -> None:
    """The process's MLflow client setup, its warnings, and SIGTERM as a clean stop."""
    client.configure()
    quiet_stage_notice()
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM ends runs in flight KILLED, as Ctrl-C
    if project_run := os.environ.pop("MLFLOW_RUN_ID", None):
        # started by `mlflow run`: its run stays the project's; ours are tagged with it
        os.environ["DURATION_PROJECT_RUN_ID"] = project_run
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def connect(ctx: typer.Context) -> str:
    """Make sure the tracking server answers (starting the local one), and use it."""
    return client.use(tracking_server.ensure(settings(ctx)))


def connect_and_reap(ctx: typer.Context) -> str:
    """Connect, then end the runs that dead processes on this host left RUNNING."""
    from duration.tracking.reap import reap  # deferred: MLflow takes seconds to import

    uri = connect(ctx)
    if reaped := reap():
        typer.echo(f"ended {len(reaped)} run(s) left RUNNING by processes that are gone")
    return uri


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C or SIGTERM asks the work to stop cleanly (runs in flight end KILLED); a second
    Ctrl-C stops at once."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@contextmanager
def watch_server(ctx: typer.Context, uri: str) -> Iterator[None]:
    """Stop a long command within a minute if the tracking server stops answering.

    MLflow's client would retry each request for minutes. The runs this leaves RUNNING are
    ended by `duration runs reap` once the server is back.
    """
    every = settings(ctx).tracking.check_s
    done = threading.Event()

    def watch() -> None:
        misses = 0
        while not done.wait(every):
            misses = 0 if is_healthy(uri, timeout=min(every, 5.0)) else misses + 1
            if misses >= SERVER_MISSES:
                print(
                    f"duration: error: the tracking server at {uri} stopped answering for "
                    f"{SERVER_MISSES * every:.0f} s: start it again (make mlflow-start), then "
                    "`duration runs reap` ends the runs this left RUNNING",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(1)  # a request may be stuck in MLflow's retries: stop now

    threading.Thread(target=watch, name="server-watch", daemon=True).start()
    try:
        yield
    finally:
        done.set()


@contextmanager
def long_running(ctx: typer.Context, uri: str) -> Iterator[threading.Event]:
    """A long command's guard: stop cleanly on signals, and stop if the server dies."""
    with stop_on_signals() as stop, watch_server(ctx, uri):
        yield stop


def write_summary(path: Path | None, summary: Any) -> None:
    """The command's `--summary` JSON, written atomically (nothing without a path)."""
    if path is not None:
        write_atomic(path, json.dumps(summary, indent=2, default=str) + "\n")
