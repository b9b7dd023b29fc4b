"""The password throttle, on a real SQLite file: counted per (user, address), locked with a
growing delay, cleared by the right password or an admin."""

from __future__ import annotations

from duration.server import throttle
from duration.server.throttle import Throttle


def test_too_many_wrong_passwords_lock_the_pair_and_only_the_pair(tmp_path):
    t = Throttle(tmp_path / "t.db")
    now = 1_000.0
    for i in range(throttle.ATTEMPTS - 1):
        assert t.failed("alice", "10.0.0.5", now + i).lock_s == 0
    verdict = t.failed("alice", "10.0.0.5", now + 9)
    assert verdict.lock_s == throttle.FIRST_LOCK_S
    assert t.state("alice", "10.0.0.5", now + 10).locked_s == throttle.FIRST_LOCK_S - 1
    assert t.state("alice", "10.0.0.6", now + 10).locked_s == 0  # another address
    assert t.state("admin", "10.0.0.5", now + 10).locked_s == 0  # another user
    # once the lock has passed, each wrong password locks again, for twice as long
    after = now + 9 + throttle.FIRST_LOCK_S + 1
    assert t.state("alice", "10.0.0.5", after).locked_s == 0
    assert t.failed("alice", "10.0.0.5", after).lock_s == 2 * throttle.FIRST_LOCK_S
    later = after + 2 * throttle.FIRST_LOCK_S + 1
    assert t.failed("alice", "10.0.0.5", later).lock_s == 4 * throttle.FIRST_LOCK_S
    # the right password, once the lock has passed, starts afresh
    t.succeeded("alice", "10.0.0.5")
    state = t.state("alice", "10.0.0.5", later + 1000)
    assert not state.counted and state.locked_s == 0


def test_wrong_passwords_spread_over_more_than_the_window_never_lock(tmp_path):
    t = Throttle(tmp_path / "t.db")
    for i in range(3 * throttle.ATTEMPTS):
        assert t.failed("bob", "127.0.0.1", i * throttle.WINDOW_S / 5).lock_s == 0


def test_the_lock_grows_to_its_cap_and_an_admin_clears_it(tmp_path):
    t = Throttle(tmp_path / "t.db")
    now = 0.0
    for _ in range(throttle.ATTEMPTS):
        lock = t.failed("carol", "a", now).lock_s
    for _ in range(12):
        now += lock + 1
        lock = t.failed("carol", "a", now).lock_s
    assert lock == throttle.MAX_LOCK_S
    t.failed("carol", "b", now)
    assert t.clear("carol") == 2
    assert t.state("carol", "a", now).locked_s == 0
