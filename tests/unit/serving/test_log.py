"""The prediction log's segments, their parquet files and its readers: no server, real
files, real child processes killed with -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from duration.errors import DurationError
from duration.serving import log as pl
from duration.serving import log_read


def request(i: int, rides: int = 1, request_id: str | None = None, **odd: object):
    """One answered request of `rides` rides (`odd`: inputs as a client might send them)."""
    inputs = {
        "pickup_datetime": ["2021-04-01T00:00:00.000"] * rides,
        "PULocationID": [43] * rides,
        "DOLocationID": [237] * rides,
        "trip_distance": [1.67] * rides,
        "VendorID": [2.0] * rides,
    }
    return pl.ServedRequest(
        request_id=request_id or f"r-{i}",
        served_at=pl.EpochMs(1_764_630_000_000 + i),
        model_name="m",
        model_version="3",
        arm="production",
        weight=None,
        latency_ms=1.5,
        ride_ids=[f"green-2021-04-{i:04d}{k:02d}" for k in range(rides)],
        inputs={**inputs, **odd},
        predictions=[7.25 + i + k for k in range(rides)],
    )


def make_log(tmp_path, **kw) -> pl.PredictionLog:
    counters = pl.Counters(pid=os.getpid(), model_name="m", model_version="3", arm="production")
    return pl.PredictionLog(tmp_path / "log", tmp_path / "workers", counters, **kw)


def rides(tmp_path) -> list[str]:
    return log_read.read(tmp_path / "log").table.column("ride_id").to_pylist()


def test_a_request_is_in_a_file_as_soon_as_it_is_added_and_parquet_after_a_flush(tmp_path):
    log = make_log(tmp_path, flush_s=60).start()
    log.add(request(0, rides=2))
    assert rides(tmp_path) == ["green-2021-04-000000", "green-2021-04-000001"]  # the segment
    log.add(request(1))
    log.flush()  # the segment becomes parquet
    log.add(request(2))
    log.close()  # a graceful stop turns the rest into parquet too
    files = sorted(p.name for p in (tmp_path / "log").iterdir())
    assert len(files) == 2 and all(f.endswith(".parquet") for f in files), files
    table = log_read.read(tmp_path / "log").table.to_pandas()
    assert table["position"].tolist() == [0, 1, 0, 0]
    assert table["prediction"].tolist() == [7.25, 8.25, 8.25, 9.25]
    assert str(table["served_at"].dtype) == "datetime64[ms, UTC]"
    assert table["RatecodeID"].isna().all()  # an input the client did not send
    status = json.loads((tmp_path / "workers" / f"{os.getpid()}.json").read_text())
    assert status["answered_requests"] == 3 and status["logged_rides"] == 4
    assert status["files"] == 2 and status["pending_rides"] == 0 and status["writing"]


def test_odd_client_values_become_nulls_not_a_lost_file(tmp_path):
    log = make_log(tmp_path, flush_s=60).start()
    log.add(request(0, PULocationID=["43"], trip_distance=["far"], pickup_datetime=[1.6e9]))
    log.add(request(1))
    log.close()
    t = log_read.read(tmp_path / "log").table.to_pandas()
    assert t["PULocationID"].isna().tolist() == [True, False]
    assert t["trip_distance"].isna().tolist() == [True, False]
    assert t["pickup_datetime"].tolist() == ["1600000000.0", "2021-04-01T00:00:00.000"]


def test_a_ride_is_read_once_by_its_key_whatever_logged_it_twice(tmp_path):
    """A request retried on another worker (same request id, same arm) is logged by both."""
    log = make_log(tmp_path, flush_s=60).start()
    log.add(request(0, rides=2, request_id="same"))
    log.add(request(0, rides=2, request_id="same"))  # the retry
    shadow = request(0, rides=2, request_id="same")
    log.add(pl.ServedRequest(**{**shadow.__dict__, "arm": "shadow"}))  # its shadow's copy
    log.close()
    table = log_read.read(tmp_path / "log").table.to_pandas()
    assert sorted(zip(table["arm"], table["position"], strict=True)) == [
        ("production", 0),
        ("production", 1),
        ("shadow", 0),
        ("shadow", 1),
    ]


def test_a_worker_killed_with_minus_9_loses_no_request_it_added(tmp_path):
    """A real child process adds requests, then dies with SIGKILL between two flushes: every
    request `add` returned for is read back (from its segment), and a live worker's flush
    turns the dead one's segment into parquet."""
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from duration.serving import log as pl\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from test_log import request\n"
        "c = pl.Counters(pid=os.getpid(), model_name='m', model_version='3', arm='production')\n"
        "log = pl.PredictionLog(Path(sys.argv[1]) / 'log', Path(sys.argv[1]) / 'w', c, 60)\n"
        "log.start()\n"
        "for i in range(500):\n"
        "    log.add(request(i))\n"
        "    print(i, flush=True)\n"
        "time.sleep(60)\n"
    )
    here = os.path.dirname(__file__)
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path), here], stdout=subprocess.PIPE, text=True
    )
    added = [child.stdout.readline() for _ in range(500)]  # `add` returned for each
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert added[-1].strip() == "499"
    assert len(rides(tmp_path)) == 500  # read from the dead worker's segment
    survivor = make_log(tmp_path, flush_s=60, alive=lambda pid: pid != child.pid).start()
    survivor.close()
    assert not list((tmp_path / "log").glob("seg-*")) and len(rides(tmp_path)) == 500


def test_a_torn_last_line_is_skipped_and_the_lines_before_it_are_read(tmp_path):
    folder = tmp_path / "log"
    folder.mkdir()
    whole = request(0).line() + request(1).line()
    (folder / "seg-1-abc-000001.jsonl").write_bytes(whole + request(2).line()[:40])
    log = log_read.read(folder)
    assert log.table.num_rows == 2 and log.torn_bytes == 40 and log.skipped == []


def test_a_full_disk_keeps_the_requests_in_memory_and_writing_resumes(tmp_path, capfd):
    log = make_log(tmp_path, flush_s=60)
    log.folder.parent.mkdir(parents=True, exist_ok=True)
    log.folder.write_text("not a folder")  # every write under it fails, as a full disk does
    log.add(request(0))
    log.add(request(1))
    c = log.counters
    assert not c.writing and c.pending_rides == 2 and c.logged_rides == 0 and c.error
    said = capfd.readouterr().err
    assert said.count("cannot write") == 1 and "serving goes on" in said  # said once
    log.flush()
    status = log_read.counts(tmp_path / "workers", lambda pid: True)
    assert not status.writing and status.problem and "cannot write" in status.problem
    log.folder.unlink()
    log.folder.mkdir()
    log.add(request(2))  # waits behind the older ones: the order is kept
    assert c.pending_rides == 3
    log.flush()
    assert c.writing and c.logged_rides == 3 and c.pending_rides == 0
    assert rides(tmp_path) == [request(i).ride_ids[0] for i in range(3)]
    assert "again" in capfd.readouterr().err


def test_a_full_wait_drops_and_counts(tmp_path):
    log = make_log(tmp_path, max_pending=3)
    log.folder.parent.mkdir(parents=True, exist_ok=True)
    log.folder.write_text("not a folder")
    log.add(request(0, rides=2))
    log.add(request(1, rides=2))  # would make 4: dropped, counted
    log.add(request(2))
    assert log.counters.pending_rides == 3 and log.counters.dropped_rides == 2
    assert log.counters.answered_requests == 3


def test_the_thread_turns_segments_into_parquet_within_its_interval(tmp_path):
    log = make_log(tmp_path, flush_s=0.2).start()
    log.add(request(0))
    deadline = time.monotonic() + 10
    while not list((tmp_path / "log").glob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((tmp_path / "log").glob("*.parquet")) and rides(tmp_path) == [
        "green-2021-04-000000"
    ]
    log.close()


def test_counts_sum_live_workers_and_forget_stopped_ones(tmp_path):
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
        log.add(request(i))
        log.flush()
    names = sorted(p.name for p in log.folder.iterdir())
    assert len(names) == 3 and sum(n.count("-") == 4 for n in names) == 2  # 2 merged, 1 part
    ids = rides(tmp_path)
    assert ids == [request(i).ride_ids[0] for i in range(7)]
    # a worker stopped between writing a merged file and removing its parts
    merged = sorted(p for p in log.folder.iterdir() if p.name.count("-") == 4)[0]
    stamp, pid, hexa, first, _ = merged.stem.split("-")
    left = log.folder / f"{stamp}-{pid}-{hexa}-{first}.parquet"
    pq.write_table(pl.table_of([request(0)]), left)
    assert rides(tmp_path) == ids  # not twice


def test_a_corrupt_file_is_skipped_in_one_line_and_check_sets_it_aside(tmp_path):
    log = make_log(tmp_path, flush_s=60).start()
    for i in range(3):
        log.add(request(i))
        log.flush()
    log.close()
    broken = sorted(log.folder.glob("*.parquet"))[1]
    broken.write_bytes(broken.read_bytes()[:100])  # truncated: a disk that lied
    read = log_read.read(log.folder)
    assert read.table.num_rows == 2 and [s.path for s in read.skipped] == [broken]
    assert read.warning() == (
        f"1 file skipped (100 bytes): {broken.name}; run `duration serve log --check`"
    )
    moved = log_read.check(log.folder)
    assert [m.path for m in moved] == [tmp_path / "quarantine" / broken.name]
    again = log_read.read(log.folder)
    assert again.skipped == [] and again.table.num_rows == 2


def test_the_summed_counts_say_as_of_when_and_what_waits(tmp_path):
    log = make_log(tmp_path, flush_s=60).start()
    before = time.time()
    log.flush()  # a report with nothing in it: as of now, all written
    st = log_read.counts(tmp_path / "workers", lambda pid: True)
    assert st.as_of is not None and st.as_of >= before
    assert st.pending_rides == 0 and st.workers == 1
    log.counters.unscored_copies = 2  # a shadow's, acknowledged and not yet scored
    log._report()
    st = log_read.counts(tmp_path / "workers", lambda pid: True)
    assert (st.pending_rides, st.unscored_copies, st.logged_rides) == (0, 2, 0)
    log.counters.unscored_copies = 0
    log.add(request(0))
    log.refused(3)
    log.close()
    st = log_read.counts(tmp_path / "workers", lambda pid: True)
    assert (st.logged_rides, st.refused_requests, st.refused_rides) == (1, 1, 3)
    assert log_read.counts(tmp_path / "workers", lambda pid: False).as_of is None  # none alive
