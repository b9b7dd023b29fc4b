"""The scoring front's request parsing: what no worker takes is refused, in one line."""

from __future__ import annotations

import json

import pytest

from duration.serving.parse import Refused, parse

COLUMNS = ["lpep_pickup_datetime", "PULocationID", "DOLocationID", "trip_distance"]


def body(**payload) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("raw", "status", "says"),
    [
        (b"{not json", 400, "not JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (body(inputs=[1]), 400, "dataframe_split or dataframe_records"),
        (body(dataframe_split={"columns": COLUMNS, "data": []}), 400, "no rides"),
        (body(dataframe_records=[1, 2]), 400, "list of objects"),
        (body(dataframe_split={"columns": COLUMNS, "data": [[1, 2]]}), 400, "the 4 columns"),
        (
            body(dataframe_records=[{"PULocationID": 1, "ride_id": [1]}]),
            400,
            "ride 0: ride_id is a",
        ),
        (body(dataframe_records=[{"PULocationID": 1, "ride_id": 2.5}]), 400, "ride_id of ride 0"),
        (
            body(dataframe_records=[{"PULocationID": 1}, {"PULocationID": {"a": 1}}]),
            400,
            "ride 1: PULocationID is an object",
        ),
        (b"[" * 10_000 + b"]" * 10_000, 400, "deeper than 8 levels"),
        (body(dataframe_records=[{"PULocationID": [[[[[[[1]]]]]]]}]), 400, "deeper than 8"),
        (body(dataframe_records=[{"PULocationID": 1, "ride_id": True}]), 400, "bool"),
        (body(dataframe_records=[{"PULocationID": 1}] * 11), 413, "send at most 10"),
    ],
)
def test_requests_no_worker_should_take_are_refused(raw, status, says):
    with pytest.raises(Refused, match=says) as e:
        parse(raw, COLUMNS, max_rides=10)
    assert e.value.status == status


def test_a_request_keeps_the_signatures_columns_and_the_ride_ids():
    records = [
        {"PULocationID": 1, "DOLocationID": 2, "fare_amount": 9.0, "ride_id": 7},
        {"PULocationID": 3, "DOLocationID": 4, "fare_amount": 8.0},
    ]
    rides = parse(body(dataframe_records=records), COLUMNS, max_rides=10)
    assert rides.n == 2 and rides.ride_ids == ["7", None]
    assert rides.columns == {"PULocationID": [1, 3], "DOLocationID": [2, 4]}  # no fare
