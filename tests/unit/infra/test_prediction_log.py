"""The prediction log's buffer and writer, and the scoring front's request parsing: no
server, real files."""

from __future__ import annotations

import json
import os
import time

import pytest

from duration.errors import DurationError
from duration.infra import prediction_log as pl
from duration.infra.scoring_app import Refused, parse

COLUMNS = ["lpep_pickup_datetime", "PULocationID", "DOLocationID", "trip_distance"]


def ride(i: int, request_id: str = "r") -> tuple:
    """One row in SCHEMA's order."""
    return (f"{request_id}-{i}", f"green-2021-04-{i:06d}", 1_764_630_000_000 + i, "m", "3",
            "production", 1.5, "2021-04-01T00:00:00.000", 43, 237, 1.67, 2.0, 1.0, 1.0, 1.0,
            7.25 + i)  # fmt: skip


def make_log(tmp_path, **kw) -> pl.PredictionLog:
    counters = pl.Counters(pid=os.getpid(), model_name="m", model_version="3", arm="production")
    return pl.PredictionLog(tmp_path / "log", tmp_path / "workers", counters, **kw)


def test_rows_are_written_atomically_one_file_a_flush_and_read_back(tmp_path):
    log = make_log(tmp_path, flush_s=60).start()
    log.add([ride(0), ride(1)])
    log.add([ride(2)])
    log.flush()
    log.add([ride(3)])
    log.close()  # a graceful stop flushes the rest
    files = sorted((tmp_path / "log").iterdir())
    assert len(files) == 2 and all(f.suffix == ".parquet" for f in files)  # no .part left
    table = pl.read(tmp_path / "log").to_pandas()
    assert table["ride_id"].tolist() == [f"green-2021-04-{i:06d}" for i in range(4)]
    assert table["prediction"].tolist() == [7.25, 8.25, 9.25, 10.25]
    assert str(table["served_at"].dtype) == "datetime64[ms, UTC]"
    status = json.loads((tmp_path / "workers" / f"{os.getpid()}.json").read_text())
    assert status["answered_requests"] == 3 and status["logged_rides"] == 4
    assert status["files"] == 2 and status["pending_rides"] == 0 and status["writing"]


def test_odd_client_values_become_nulls_not_a_lost_file(tmp_path):
    log = make_log(tmp_path, flush_s=60).start()
    odd = list(ride(0))
    odd[8], odd[10], odd[7] = "43", "far", 1_617_235_200  # a string zone, a word, a number
    log.add([tuple(odd), ride(1)])
    log.close()
    t = pl.read(tmp_path / "log").to_pandas()
    assert t["PULocationID"].isna().tolist() == [True, False]
    assert t["trip_distance"].isna().tolist() == [True, False]
    assert t["pickup_datetime"].tolist() == ["1617235200", "2021-04-01T00:00:00.000"]


def test_a_failing_disk_keeps_the_rows_and_writing_resumes(tmp_path, capfd):
    log = make_log(tmp_path, flush_s=60)
    log.folder.parent.mkdir(parents=True, exist_ok=True)
    log.folder.write_text("not a folder")  # every write under it fails, as a full disk does
    log.add([ride(0)])
    log.flush()
    log.add([ride(1)])
    log.flush()
    c = log.counters
    assert not c.writing and c.pending_rides == 2 and c.logged_rides == 0 and c.error
    said = capfd.readouterr().err
    assert said.count("cannot write") == 1 and "serving goes on" in said  # said once
    status = pl.status(tmp_path / "workers", lambda pid: True)
    assert not status["writing"] and "cannot write" in status["problem"]
    log.folder.unlink()
    log.folder.mkdir()
    log.flush()
    assert c.writing and c.logged_rides == 2 and c.pending_rides == 0
    assert pl.read(log.folder)["ride_id"].to_pylist() == [ride(0)[1], ride(1)[1]]  # in order
    assert "again" in capfd.readouterr().err


def test_a_full_buffer_drops_and_counts(tmp_path):
    log = make_log(tmp_path, max_pending=3)
    log.add([ride(0), ride(1)])
    log.add([ride(2), ride(3)])  # would make 4: dropped, counted
    log.add([ride(4)])
    assert log.counters.pending_rides == 3 and log.counters.dropped_rides == 2
    assert log.counters.answered_requests == 3


def test_the_flush_thread_writes_within_its_interval(tmp_path):
    log = make_log(tmp_path, flush_s=0.2).start()
    log.add([ride(0)])
    deadline = time.monotonic() + 5
    while not list((tmp_path / "log").glob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pl.read(tmp_path / "log").num_rows == 1
    log.close()


def test_status_counts_live_workers_and_forgets_stopped_ones(tmp_path):
    folder = tmp_path / "workers"
    folder.mkdir()
    for pid, logged in ((101, 5), (102, 7)):
        c = pl.Counters(pid=pid, model_name="m", model_version="1", arm="production",
                        logged_rides=logged)  # fmt: skip
        (folder / f"{pid}.json").write_text(json.dumps(c.__dict__))
    st = pl.status(folder, lambda pid: pid == 102)
    assert st["workers"] == 1 and st["logged_rides"] == 7 and st["writing"]
    assert not (folder / "101.json").exists()


def test_export_with_nothing_logged_is_one_line(tmp_path):
    with pytest.raises(DurationError, match="nothing served has been logged in .* yet"):
        pl.export(tmp_path / "none", tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


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
        (body(dataframe_records=[{"PULocationID": 1, "ride_id": [1]}]), 400, "ride_id of ride 0"),
        (body(dataframe_records=[{"PULocationID": 1, "ride_id": True}]), 400, "bool"),
        (body(dataframe_records=[{"PULocationID": 1}] * 11), 413, "send at most 10"),
    ],
)
def test_requests_no_worker_should_take_are_refused(raw, status, says):
    with pytest.raises(Refused, match=says) as e:
        parse(raw, COLUMNS, max_rides=10)
    assert e.value.status == status


def test_a_request_keeps_the_signatures_columns_and_the_ride_ids():
    records = [{"PULocationID": 1, "DOLocationID": 2, "fare_amount": 9.0, "ride_id": 7},
               {"PULocationID": 3, "DOLocationID": 4, "fare_amount": 8.0}]  # fmt: skip
    rides = parse(body(dataframe_records=records), COLUMNS, max_rides=10)
    assert rides.n == 2 and rides.ride_ids == ["7", None]
    assert rides.columns == {"PULocationID": [1, 3], "DOLocationID": [2, 4]}  # no fare


def test_a_worker_merges_its_files_and_read_skips_parts_left_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(pl, "COMPACT_PARTS", 3)
    log = make_log(tmp_path, flush_s=60)
    log.folder.mkdir(parents=True)
    for i in range(7):
        log.add([ride(i)])
        log.flush()
    names = sorted(p.name for p in log.folder.iterdir())
    assert len(names) == 3 and sum(n.count("-") == 4 for n in names) == 2  # 2 merged, 1 part
    rows = pl.read(log.folder)["ride_id"].to_pylist()
    assert rows == [ride(i)[1] for i in range(7)]
    # a worker stopped between writing a merged file and removing its parts
    merged = sorted(p for p in log.folder.iterdir() if p.name.count("-") == 4)[0]
    stamp, pid, hexa, first, _ = merged.stem.split("-")
    left = log.folder / f"{stamp}-{pid}-{hexa}-{first}.parquet"
    pl.pq.write_table(pl._table([ride(0)]), left)
    assert pl.read(log.folder)["ride_id"].to_pylist() == rows  # not twice


def test_the_summed_status_says_as_of_when_and_what_is_not_yet_written(tmp_path):
    log = make_log(tmp_path, flush_s=60).start()
    before = time.time()
    log.flush()  # a report with nothing in it: as of now, all written
    st = pl.status(tmp_path / "workers", lambda pid: True)
    assert st["as_of"] >= before and st["pending_rides"] == 0 and st["workers"] == 1
    log.add([ride(0)])
    log.counters.unscored_copies = 2  # a shadow's, acknowledged and not yet scored
    log._report()
    st = pl.status(tmp_path / "workers", lambda pid: True)
    assert (st["pending_rides"], st["unscored_copies"], st["logged_rides"]) == (1, 2, 0)
    log.counters.unscored_copies = 0
    log.close()
    st = pl.status(tmp_path / "workers", lambda pid: True)
    assert (st["pending_rides"], st["logged_rides"]) == (0, 1)
    assert pl.status(tmp_path / "workers", lambda pid: False)["as_of"] is None  # none alive
