"""A ride's id: the TLC publishes none, so a prepared month's ride is named by its row,
`green-2021-04-000123`. `duration traffic` sends it with each ride, the served model logs
it, and `monitor --served` and `ab report` join it back to the ride's real duration."""

from __future__ import annotations

import numpy as np
import pandas as pd

from duration.core.schema import Color


def prefix(color: Color | str, month: str) -> str:
    """What every id of (color, month) starts with."""
    return f"{Color(color).value}-{month}-"


def ride_ids(color: Color | str, month: str, index: np.ndarray) -> list[str]:
    """The ids of a prepared month's rides at `index` (their rows in the prepared file)."""
    head = prefix(color, month)
    return [f"{head}{i:06d}" for i in np.asarray(index).tolist()]


def ride_index(ids: pd.Series, color: Color | str, month: str) -> pd.Series:
    """The prepared-file row of each id that `ride_ids` made for (color, month); -1 for the
    others (another month's, a client's own, none)."""
    head = prefix(color, month)
    s = ids.astype("string")
    tail = s.str.removeprefix(head)
    ok = s.str.startswith(head).fillna(False) & tail.str.fullmatch(r"\d+").fillna(False)
    return pd.to_numeric(tail.where(ok), errors="coerce").fillna(-1).astype(np.int64)
