"""A ride's id names its row of the prepared month, and reads back."""

from __future__ import annotations

import numpy as np
import pandas as pd

from duration.core.rides import ride_ids, ride_index


def test_a_ride_id_names_its_row_of_the_prepared_month_and_reads_back():
    ids = ride_ids("green", "2021-04", np.array([0, 7, 123456]))
    assert ids == ["green-2021-04-000000", "green-2021-04-000007", "green-2021-04-123456"]
    others = ["yellow-2021-04-000001", "green-2021-05-000001", "green-2021-04-x", "7", None]
    back = ride_index(pd.Series(ids + others, dtype=object), "green", "2021-04")
    assert back.tolist() == [0, 7, 123456, -1, -1, -1, -1, -1]
