"""Wall time and peak memory of a job's stages, for the pipeline's timings and the benchmarks.

The peak is this process's resident set (VmHWM), reset at the start of each stage where Linux
allows it (`/proc/self/clear_refs`); elsewhere it is the process's peak so far.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_rss_mb() -> float:
    """This process's peak RSS in MB (VmHWM; unlike ru_maxrss, not inherited from a parent)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Start a new peak-RSS window (Linux: "5" to clear_refs); False where that is refused."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


@dataclass
class Stage:
    """One stage: how long it took and the most memory the process held during it."""

    name: str
    seconds: float
    peak_rss_mb: float


@dataclass
class Stopwatch:
    """Times stages in order: `with watch.stage("search"): ...`."""

    stages: list[Stage] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Measure the block as the stage `name` (recorded even when it raises)."""
        reset_peak()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages.append(Stage(name, time.perf_counter() - start, peak_rss_mb()))

    def as_dict(self) -> dict[str, dict[str, float]]:
        """stage -> {"seconds", "peak_rss_mb"}, rounded, in the order the stages ran."""
        return {
            s.name: {"seconds": round(s.seconds, 2), "peak_rss_mb": round(s.peak_rss_mb, 1)}
            for s in self.stages
        }

    def rows(self) -> list[dict]:
        """One dict per stage, for a table."""
        return [asdict(s) for s in self.stages]
