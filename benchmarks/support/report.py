"""Reports under `reports/`: what a run was measured on, markdown tables, and the pair of
files (NAME.json for the figures, NAME.md to read) that every benchmark and script writes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import psutil

from duration.infra.files import write_atomic
from duration.tracking.runs import git_commit

REPORTS = Path(__file__).resolve().parents[2] / "reports"
WORK = REPORTS / "bench-data"  # data the benchmarks build once and keep (not committed)


def stamp() -> dict[str, Any]:
    """What a report was measured on: the commit, the machine and when."""
    return {
        "commit": git_commit(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def markdown_table(rows: list[dict[str, Any]], cols: list[str] | None = None) -> list[str]:
    """A markdown table of `rows` (every key of the first row by default)."""
    cols = cols or list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return lines + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]


def write(name: str, figures: Any, lines: list[str], folder: Path = REPORTS) -> Path:
    """`folder`/NAME.json (the figures) and NAME.md (`lines`), atomically; prints the
    markdown and returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / f"{name}.json", json.dumps(figures, indent=2, default=str) + "\n")
    md = write_atomic(folder / f"{name}.md", "\n".join(lines).rstrip("\n") + "\n")
    print(md.read_text())
    return md
