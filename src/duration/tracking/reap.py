"""End the runs that dead processes on this host left RUNNING."""

from __future__ import annotations

import socket
from typing import Any

from duration.infra.proc import gone
from duration.tracking.client import client


def orphaned(run: Any) -> bool:
    """True when a RUNNING run's process (by its host and pid tags) no longer exists here."""
    tags = run.data.tags
    return gone(tags.get("host", ""), tags.get("pid", ""), run.info.start_time)


def reap(uri: str | None = None) -> list[str]:
    """End FAILED every RUNNING run whose process on this host is gone; return their ids.

    A process killed with SIGKILL (or a machine that lost power) cannot end its own runs.
    """
    c, host = client(uri), socket.gethostname()
    exps = [e.experiment_id for e in c.search_experiments()]
    if not exps:
        return []
    runs = c.search_runs(exps, "attributes.status = 'RUNNING'", max_results=5000)
    reaped = [r.info.run_id for r in runs if orphaned(r)]
    for run_id in reaped:
        c.set_tag(
            run_id, "reaped", f"its process on {host} was gone; ended by `duration runs reap`"
        )
        c.set_terminated(run_id, "FAILED")
    return reaped
