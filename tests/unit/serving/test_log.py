"""The prediction log's buffer, writer and readers: no server, real files."""

from __future__ import annotations

import json
import os
import time

import pytest

from duration.errors import DurationError
from duration.serving import log as pl
from duration.serving import log_read


def ride(i: int, request_id: str = "r", **odd: object) -> pl.ServedRide:
    """One served ride (`odd`: fields as a client might have sent them)."""
    row = pl.ServedRide(
        request_id=f"{request_id}-{i}",
        ride_id=f"green-2021-04-{i:06d}",
        served_at=pl.EpochMs(1_764_630_000_000 + i),
        model_name="m",
        model_version="3",
        arm="production",
        weight=None,
        latency_ms=1.5,
        pickup_datetime="2021-04-01T00:00:00.000",
        PULocationID=43,
        DOLocationID=237,
        trip_distance=1.67,
        VendorID=2.0,
        RatecodeID=1.0,
        trip_type=1.0,
        passenger_count=1.0,
        prediction=7.25 + i,
    )
    return row._replace(**odd)


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
    table = log_read.read(tmp_path / "log").to_pandas()
    assert table["ride_id"].tolist() == [f"green-2021-04-{i:06d}" for i in range(4)]
    assert table["prediction"].tolist() == [7.25, 8.25, 9.25, 10.25]
    assert str(table["served_at"].dtype) == "datetime64[ms, UTC]"
    status = json.loads((tmp_path / "workers" / f"{os.getpid()}.json").read_text())
    assert status["answered_requests"] == 3 and status["logged_rides"] == 4
    assert status["files"] == 2 and status["pending_rides"] == 0 and status["writing"]


def test_odd_client_values_become_nulls_not_a_lost_file(tmp_path):
    log = make_log(tmp_path, flush_s=60).start()
    odd = ride(0, PULocationID="43", trip_distance="far", pickup_datetime=1_617_235_200)
    log.add([odd, ride(1)])  # a string zone, a word, a number as a time
    log.close()
    t = log_read.read(tmp_path / "log").to_pandas()
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
    status = log_read.counts(tmp_path / "workers", lambda pid: True)
    assert not status.writing and status.problem and "cannot write" in status.problem
    log.folder.unlink()
    log.folder.mkdir()
    log.flush()
    assert c.writing and c.logged_rides == 2 and c.pending_rides == 0
    assert log_read.read(log.folder)["ride_id"].to_pylist() == [
        ride(0).ride_id,
        ride(1).ride_id,
    ]  # in order
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
    assert log_read.read(tmp_path / "log").num_rows == 1
    log.close()


def test_status_counts_live_workers_and_forgets_stopped_ones(tmp_path):
    folder = tmp_path / "workers"
    folder.mkdir()
    for pid, logged in ((101, 5), (102, 7)):
        c = pl.Counters(
            pid=pid, model_name="m", model_version="1", arm="production", logged_rides=logged
        )
        (folder / f"{pid}.json").write_text(json.dumps(c.__dict__))
    st = log_read.counts(folder, lambda pid: pid == 102)
    assert st.workers == 1 and st.logged_rides == 7 and st.writing
    assert not (folder / "101.json").exists()


def test_export_with_nothing_logged_is_one_line(tmp_path):
    with pytest.raises(DurationError, match="nothing served has been logged in .* yet"):
        log_read.export(tmp_path / "none", tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_a_worker_merges_its_files_and_read_skips_parts_left_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(pl, "COMPACT_PARTS", 3)
    log = make_log(tmp_path, flush_s=60)
    log.folder.mkdir(parents=True)
    for i in range(7):
        log.add([ride(i)])
        log.flush()
    names = sorted(p.name for p in log.folder.iterdir())
    assert len(names) == 3 and sum(n.count("-") == 4 for n in names) == 2  # 2 merged, 1 part
    rows = log_read.read(log.folder)["ride_id"].to_pylist()
    assert rows == [ride(i).ride_id for i in range(7)]
    # a worker stopped between writing a merged file and removing its parts
    merged = sorted(p for p in log.folder.iterdir() if p.name.count("-") == 4)[0]
    stamp, pid, hexa, first, _ = merged.stem.split("-")
    left = log.folder / f"{stamp}-{pid}-{hexa}-{first}.parquet"
    pl.pq.write_table(pl.table_of([ride(0)]), left)
    assert log_read.read(log.folder)["ride_id"].to_pylist() == rows  # not twice


def test_the_summed_status_says_as_of_when_and_what_is_not_yet_written(tmp_path):
    log = make_log(tmp_path, flush_s=60).start()
    before = time.time()
    log.flush()  # a report with nothing in it: as of now, all written
    st = log_read.counts(tmp_path / "workers", lambda pid: True)
    assert st.as_of is not None and st.as_of >= before
    assert st.pending_rides == 0 and st.workers == 1
    log.add([ride(0)])
    log.counters.unscored_copies = 2  # a shadow's, acknowledged and not yet scored
    log._report()
    st = log_read.counts(tmp_path / "workers", lambda pid: True)
    assert (st.pending_rides, st.unscored_copies, st.logged_rides) == (1, 2, 0)
    log.counters.unscored_copies = 0
    log.close()
    st = log_read.counts(tmp_path / "workers", lambda pid: True)
    assert (st.pending_rides, st.logged_rides) == (0, 1)
    assert log_read.counts(tmp_path / "workers", lambda pid: False).as_of is None  # none alive
