"""Monitor one version on every month the TLC source holds in a range (`make monitor-months`):
the measurements the monitoring thresholds' defaults were chosen from.

Months the source does not have are skipped with one line. Writes reports/monitoring.json and
reports/monitoring.md (a table: RMSE, its ratio to the version's test RMSE, drift share,
prediction drift, data quality, verdict, and seconds per month).
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks.support.report import markdown_table, write
from duration.core.schema import month_range
from duration.errors import DurationError
from duration.ops import monitor
from duration.server import tracking_server
from duration.settings import Settings
from duration.tracking.client import use
from duration.tracking.names import MODEL_NAME

COLUMNS = [
    *("month", "rmse", "rmse_ratio", "drift_share", "prediction_drift", "missing_share"),
    *("out_of_range_share", "unseen_zone_share", "verdict", "seconds"),
]


def cell(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown(rows: list[dict], model: str, s: Settings) -> list[str]:
    """The table, with the thresholds it was judged by."""
    shown = [{c: cell(r[c]) for c in COLUMNS} for r in rows]
    return [
        f"Model {model}; thresholds: drift_threshold {s.monitor.drift_threshold}, drift_share "
        f"{s.monitor.drift_share}, rmse_ratio {s.monitor.rmse_ratio}.",
        "",
        *markdown_table(shown, COLUMNS),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=f"models:/{MODEL_NAME}@production")
    p.add_argument("--color", default="green")
    p.add_argument("--from", dest="start", default="2021-02")
    p.add_argument("--to", dest="end", default="2023-04")
    args = p.parse_args()
    s = Settings.from_env()
    use(tracking_server.ensure(s))
    rows = []
    for month in month_range(args.start, args.end):
        t0 = time.perf_counter()
        try:
            r = monitor.monitor(s, args.model, args.color, month)
        except DurationError as e:
            print(f"{month}: skipped: {e}", file=sys.stderr)
            continue
        row = {c: getattr(r, c, None) for c in COLUMNS[:-1]}
        rows.append(row | {"seconds": round(time.perf_counter() - t0, 1)})
        print(" ".join(f"{c}={cell(row[c])}" for c in COLUMNS[:-1]))
    write("monitoring", rows, markdown(rows, args.model, s))


if __name__ == "__main__":
    main()
