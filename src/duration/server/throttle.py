"""Slowing down password guessing on the team server (MLflow's basic auth has no limit).

Wrong passwords are counted per (user, client address), in a small SQLite file that every
worker of the server shares. After ATTEMPTS wrong ones within WINDOW_S, that pair is
refused (HTTP 429, its password not even checked) for FIRST_LOCK_S; each wrong password
after a lock, until a right one, locks it again for twice as long, up to MAX_LOCK_S. The
right password, once a lock has ended, clears the count. Only the pair is locked: the same
user from another address, or another user, gets in as before, so a guesser cannot lock
`admin` or the pipeline's editor out from elsewhere. `clear` (`duration users unlock`)
ends a user's locks at once.

Why 10 in 5 minutes: a person who mistypes a password tries a few times, and a pipeline
sends the right one on every request (thousands a run), so neither meets it; a guesser
gets about 10 tries, then 1 more every 30 s, 1 min, 2 min... at most 1 each 15 minutes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

ATTEMPTS = 10  # the defaults of settings' `tracking.login_*` (DURATION_LOGIN_*)
WINDOW_S = 300.0
FIRST_LOCK_S = 30.0
MAX_LOCK_S = 900.0


@dataclass(frozen=True, kw_only=True)
class Policy:
    """How many wrong passwords, within how long, lock a pair for how long at first."""

    attempts: int = ATTEMPTS
    window_s: float = WINDOW_S
    first_lock_s: float = FIRST_LOCK_S
    max_lock_s: float = MAX_LOCK_S


_SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (
    user TEXT NOT NULL,
    address TEXT NOT NULL,
    count INTEGER NOT NULL,     -- wrong passwords since `first`
    first REAL NOT NULL,        -- when this window's first wrong one came
    strikes INTEGER NOT NULL,   -- locks since the last right password
    locked_until REAL NOT NULL,
    PRIMARY KEY (user, address)
)
"""


@dataclass(frozen=True, kw_only=True)
class State:
    """A (user, address) pair: wrong passwords counted, and seconds it stays refused."""

    counted: bool
    locked_s: float


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """What a wrong password did: counted, or locked the pair for `lock_s` seconds."""

    count: int
    lock_s: float = 0.0


class Throttle:
    """The shared count, in the SQLite file `path`."""

    def __init__(self, path: Path, policy: Policy | None = None) -> None:
        self.path = path
        self.policy = policy or Policy()

    @contextmanager
    def _db(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; a writing one takes the lock before it reads (the server's
        workers race on the same pair)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=10, isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def state(self, user: str, address: str, now: float | None = None) -> State:
        """Whether the pair has wrong passwords counted, and how long it stays refused."""
        now = time.time() if now is None else now
        with self._db(write=False) as db:
            row = db.execute(
                "SELECT locked_until FROM failures WHERE user = ? AND address = ?",
                (user, address),
            ).fetchone()
        return State(counted=row is not None, locked_s=max(0.0, row[0] - now) if row else 0.0)

    def failed(self, user: str, address: str, now: float | None = None) -> Verdict:
        """Count a wrong password; lock the pair if it is one too many."""
        now = time.time() if now is None else now
        with self._db() as db:
            row = db.execute(
                "SELECT count, first, strikes FROM failures WHERE user = ? AND address = ?",
                (user, address),
            ).fetchone()
            count, first, strikes = row if row else (0, now, 0)
            p = self.policy
            if now - first > p.window_s and strikes == 0:
                count, first = 0, now
            count += 1
            lock = 0.0
            if strikes > 0 or count >= p.attempts:
                lock = min(p.first_lock_s * 2**strikes, p.max_lock_s)
                strikes, count, first = strikes + 1, 0, now
            db.execute(
                "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?)",
                (user, address, count, first, strikes, now + lock if lock else 0.0),
            )
        return Verdict(count=count, lock_s=lock)

    def succeeded(self, user: str, address: str) -> None:
        """The right password: the pair starts afresh."""
        with self._db() as db:
            db.execute("DELETE FROM failures WHERE user = ? AND address = ?", (user, address))

    def clear(self, user: str) -> int:
        """End every lock and count of `user`; how many addresses it had."""
        with self._db() as db:
            return db.execute("DELETE FROM failures WHERE user = ?", (user,)).rowcount
