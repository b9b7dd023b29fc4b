"""A scoring request's rides, read once: the JSON body to columns, the clients' ride ids,
and what no worker takes (bad JSON, JSON nested deeper than MAX_DEPTH, no rides, too many
rides, a value that is not a scalar, a `ride_id` that is not a string or an integer),
refused with an HTTP status and one line."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?$")
# A request is an object of a table of rows: 4 levels deep (`dataframe_split`'s), 3 for
# `dataframe_records`; `params` may add a few. Deeper is refused before it is parsed.
MAX_DEPTH = 8
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_PAIR = re.compile(rb"\[\]|\{\}")
SCALARS = (str, int, float, bool, type(None))
SCALAR_TYPES = set(SCALARS)


@dataclass(frozen=True, kw_only=True)
class Rides:
    """A request's rides: the signature's columns, the clients' ride ids, how many."""

    columns: dict[str, list[Any]]
    ride_ids: list[str | None]
    n: int


NO_RIDES = Rides(columns={}, ride_ids=[], n=0)


class Refused(Exception):
    """A request no worker takes: its HTTP status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def body(self) -> bytes:
        """The JSON error MLflow's scoring server would answer."""
        code = "REQUEST_TOO_LARGE" if self.status == 413 else "BAD_REQUEST"
        return json.dumps({"error_code": code, "message": str(self)}).encode()


def _table(payload: Any) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of a `dataframe_split` or `dataframe_records` request."""
    if not isinstance(payload, dict):
        raise Refused(400, "send a JSON object with dataframe_split or dataframe_records")
    if isinstance(split := payload.get("dataframe_split"), dict):
        columns, data = split.get("columns"), split.get("data")
        if isinstance(columns, list) and isinstance(data, list):
            return [str(c) for c in columns], data
    if isinstance(records := payload.get("dataframe_records"), list):
        if not all(isinstance(r, dict) for r in records):
            raise Refused(400, "dataframe_records must be a list of objects, one per ride")
        names = list(dict.fromkeys(k for r in records for k in r))
        return names, [[r.get(k) for k in names] for r in records]
    raise Refused(400, "send the rides as dataframe_split or dataframe_records")


def _check_scalars(by_name: dict[str, list[Any]]) -> None:
    """Every value a number, a string, a boolean or null: never a list or an object."""
    for name, values in by_name.items():
        if set(map(type, values)) <= SCALAR_TYPES:
            continue
        for i, v in enumerate(values):
            if not isinstance(v, SCALARS):
                kind = "a list" if isinstance(v, list) else "an object"
                raise Refused(400, f"ride {i}: {name} is {kind}: send a number, a string or null")


def _ride_ids(values: list[Any]) -> list[str | None]:
    for i, v in enumerate(values):
        if v is not None and (isinstance(v, bool) or not isinstance(v, str | int)):
            kind = type(v).__name__
            raise Refused(400, f"ride_id of ride {i} is {kind}: send a string or an integer")
    return [None if v is None else str(v) for v in values]


def too_deep(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON in `body` nests arrays and objects deeper than `limit` (strings
    aside). Innermost pairs are taken away `limit` times; anything left was deeper."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKET)
    for _ in range(limit):
        brackets, pairs = _PAIR.subn(b"", brackets)
        if not brackets or not pairs:
            return False  # done, or not balanced (then it is not JSON, and says so)
    return bool(brackets)


def parse(body: bytes, wanted: list[str], max_rides: int) -> Rides:
    """The rides of a JSON request, or Refused."""
    if too_deep(body):
        raise Refused(
            400,
            f"the request nests arrays and objects deeper than {MAX_DEPTH} levels: send "
            "dataframe_split or dataframe_records, one row of plain values a ride",
        )
    try:
        columns, rows = _table(json.loads(body))
    except (ValueError, RecursionError) as e:
        raise Refused(400, f"the request is not JSON: {e}") from e
    if not rows:
        raise Refused(400, "the request holds no rides: send at least one")
    if len(rows) > max_rides:
        raise Refused(
            413, f"the request holds {len(rows)} rides: send at most {max_rides} a request"
        )
    if any(not isinstance(r, list) or len(r) != len(columns) for r in rows):
        raise Refused(400, f"every ride must have the {len(columns)} columns given")
    by_name = {c: [r[j] for r in rows] for j, c in enumerate(columns)}
    _check_scalars(by_name)
    ride_ids = _ride_ids(by_name.get("ride_id", [None] * len(rows)))
    kept = {c: by_name[c] for c in wanted if c in by_name}
    return Rides(columns=kept, ride_ids=ride_ids, n=len(rows))


def kind(t: Any) -> str:
    """A signature column's type as a word: long, double, datetime... or any."""
    from mlflow.types import DataType  # deferred: MLflow loads in the worker only

    return t.name if isinstance(t, DataType) else str(t).lower()


def plain(kind: str, values: list[Any]) -> np.ndarray | None:
    """A column of a signature type as the array MLflow's schema check would make of it,
    when its values need no guess (else None: MLflow's server decides)."""
    if kind == "long" and all(type(v) is int for v in values):
        return np.array(values, dtype=np.int64)
    if kind == "double" and all(type(v) in (int, float) for v in values):
        return np.array(values, dtype=np.float64)
    if kind == "datetime" and all(type(v) is str and ISO.match(v) for v in values):
        if len({len(v) for v in values}) == 1:  # one format, as pandas infers it
            return np.array(values, dtype="datetime64[us]")
        return None
    if kind == "any" and all(v is None or type(v) in (int, float) for v in values):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return None
