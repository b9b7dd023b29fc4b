"""A client of the served model: the JSON body of a request of rides (MLflow's
`dataframe_split`), the smoke test's POST, and a bounded wait for an address to answer.
Every caller (traffic, deploy, the benchmarks) builds its requests here."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from duration.errors import DurationError
from duration.infra.net import is_healthy

if TYPE_CHECKING:
    import pandas as pd

SMOKE_HEADER = "X-Duration-Smoke"  # a deploy's own smoke test: answered, never logged


def split(records: pd.DataFrame) -> tuple[list[str], list[list[Any]]]:
    """Raw ride records as the columns and rows of a request (times in ISO 8601)."""
    table = json.loads(records.to_json(orient="split", date_format="iso"))
    return list(table["columns"]), list(table["data"])


def body(columns: list[str], rows: list[list[Any]]) -> bytes:
    """The JSON body of a request holding `rows`."""
    return json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode()


def records_body(records: pd.DataFrame) -> bytes:
    """The JSON body of a request holding every ride of `records`."""
    return body(*split(records))


def smoke(url: str, version: str, records: pd.DataFrame, timeout: float = 60.0) -> np.ndarray:
    """POST `records` to `url`/invocations as a smoke test (not logged); the predictions,
    or one line saying why there are none."""
    import requests  # deferred: only the commands that call a served model need it

    try:
        r = requests.post(
            f"{url}/invocations",
            data=records_body(records),
            timeout=timeout,
            headers={"Content-Type": "application/json", SMOKE_HEADER: "1"},
        )
    except requests.RequestException as e:
        raise DurationError(f"version {version} did not answer the smoke test: {e}") from e
    if r.status_code != 200:
        raise DurationError(
            f"version {version} answered the smoke test with HTTP {r.status_code}: {r.text[:160]}"
        )
    return np.asarray(r.json()["predictions"], dtype=np.float64).ravel()


def wait_healthy(url: str, timeout: float, what: str) -> None:
    """Wait until `url`/health answers, at most `timeout` seconds; else one line."""
    deadline = time.monotonic() + timeout
    while not is_healthy(url, timeout=1.0):
        if time.monotonic() > deadline:
            raise DurationError(f"{what} at {url} did not answer within {timeout:.0f} s")
        time.sleep(0.1)
