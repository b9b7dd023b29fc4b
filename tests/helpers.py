"""What tests share: running the real `duration` command (in a child process, or its
`main` in this process), the one-line-error check, the CLI's environment, and the runs
on the tracking server."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str,
    env: dict | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
    preexec_fn: Any = None,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """Run the real `duration` console script; return the CompletedProcess.

    `env` is added to this process's environment; a variable set to None is removed.
    `preexec_fn` runs in the child before it starts (to set a resource limit); `input` is
    its stdin.
    """
    exe = Path(sys.executable).with_name("duration")
    merged = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        env={k: v for k, v in merged.items() if v is not None},
        cwd=cwd,
        timeout=timeout,
        preexec_fn=preexec_fn,
        input=input,
    )


def spawn(args: list[str], env: dict, **popen: Any) -> subprocess.Popen:
    """The real `duration` command in its own process, not waited for."""
    exe = Path(sys.executable).with_name("duration")
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([str(exe), *args], env={**os.environ, **env}, text=True, **popen)


def invoke(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the `duration` CLI's `main` in this process, where its imports are already warm
    (a new process spends 3-7 s importing MLflow and the ML stack).

    Same code as the console script: the exit code, stdout and stderr (MLflow's log lines
    included) come back as from `run_cli`. `env` is applied for the call only. Use `run_cli`
    where the process itself matters: signals, or Python warnings on stderr.
    """
    import mlflow

    from duration.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_uri = dict(os.environ), mlflow.get_tracking_uri()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for key, value in (env or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        mlflow.set_tracking_uri(saved_uri)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return subprocess.CompletedProcess(["duration", *args], rc, out.getvalue(), err.getvalue())


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """A failed command printed one clear line on stderr, no traceback, naming `needles`."""
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def cli_env(settings: Any, tracking_uri: str | None = None, **extra: str | None) -> dict:
    """The environment a `duration` command runs with for these settings (and `extra`)."""
    env = {
        "DURATION_DATA_DIR": str(settings.paths.data),
        "DURATION_TLC_URL": settings.paths.tlc_url,
        "PATH": os.environ["PATH"],
    }
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return {**env, **extra}


def use_tracking(uri: str | None) -> str | None:
    """Point this process (env and MLflow) at `uri`; return the previous env value."""
    import mlflow

    old = os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)  # None: back to MLflow's default
    return old


def children(parent_id: str, uri: str | None = None) -> list:
    """The child runs of a run, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    return list(
        client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
            order_by=["attributes.start_time ASC"],
        )
    )


def running_runs(uri: str | None = None) -> list:
    """Every RUNNING run on the server."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(exps, filter_string="attributes.status = 'RUNNING'"))


def versions(name: str) -> dict:
    """A registered model's versions, by version number."""
    from mlflow.tracking import MlflowClient

    return {v.version: v for v in MlflowClient().search_model_versions(f"name = '{name}'")}


@contextlib.contextmanager
def pg_home(prefix: str = "duration-pg-") -> Iterator[Path]:
    """A home for a PostgreSQL cluster, removed afterwards. As root the cluster runs as the
    unprivileged user, so the home is made enterable (pytest's are 0700)."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(home, 0o711)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def scoring_workers(name: str, version: str | None = None) -> list:
    """The live scoring processes (supervisors and workers) serving `name` (that version,
    or any), told apart by the DURATION_SCORING their starter gave them."""
    import json

    import psutil

    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ValueError, KeyError):
            spec = json.loads(p.environ()["DURATION_SCORING"])
            mine = spec["name"] == name and version in (None, spec["version"])
            if mine and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
    return found


@contextlib.contextmanager
def full_disk(folder: Path, size: str = "3m") -> Iterator[Path]:
    """`folder` as a tmpfs of `size`, filled until not one more byte fits: a real full disk
    (root only; skips otherwise). Unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
        for chunk in (1 << 16, 1 << 10, 1):  # until not one more byte fits
            try:
                while os.write(fd, b"\0" * chunk):
                    pass
            except OSError:
                pass
        os.close(fd)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def until(ok, timeout: float, every: float = 0.25) -> bool:
    """True once `ok()` holds, checked every `every` s for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return True
        time.sleep(every)
    return False
