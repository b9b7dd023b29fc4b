"""A background process of ours (the deployer, the orchestrator's webserver and daemon): its
own process group, a log and a pid file in its folder; started once, stopped as a group with
a bounded wait."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from duration.infra.files import write_atomic
from duration.infra.proc import alive, group_alive, stop_group


@dataclass(frozen=True, kw_only=True)
class Daemon:
    """One background process: what it runs, where its files are, how to know it."""

    name: str  # its files: NAME.pid, NAME.log
    argv: list[str]
    folder: Path
    needle: str  # a piece of its command line: a pid reused by another program is not it
    env: Mapping[str, str] = field(default_factory=dict)  # added to this process's

    @property
    def pid_file(self) -> Path:
        return self.folder / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}.log"

    def pid(self) -> int | None:
        """Its pid while it runs, else None."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if alive(pid, self.needle) else None

    def start(self, cwd: Path | None = None) -> int:
        """Start it in a process group of its own, its output appended to its log."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                cwd=cwd,
                start_new_session=True,
            )
        write_atomic(self.pid_file, str(proc.pid))
        return proc.pid

    def exited(self) -> bool:
        """True when the process has ended (reaped, so it is no zombie). A child of this
        process is asked directly: until it has exec'd its program, its command line is
        still this process's, so the needle would call it gone."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return True
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # another process's child: known by its command line
            return self.pid() is None
        return done == pid

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop its whole group (SIGTERM, then SIGKILL after `timeout` s); True if it ran."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return False
        ran = alive(pid, self.needle) or group_alive(pid)
        if ran:
            stop_group(pid, timeout)
        self.pid_file.unlink(missing_ok=True)
        return ran
