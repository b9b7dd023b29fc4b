"""Which TLC months to decide next: the sensor's rule, pure (`tick`), and what it looks at.

- A month newer than the last one taken is taken once it is published: its size matches
  the TLC's published metadata, or it looked the same (size and digest) one poll ago. The
  oldest such month goes first, one at a time; a gap in the source (a month that is not
  there) is passed over, so the sensor never stalls on it.
- A month taken before whose file changed (another digest) was re-published: it is taken
  again, once, naming both digests.
- One request per (month, digest): a month published twice with the same file is not run
  twice.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from duration.core.schema import month_range, next_month
from duration.data.tlc import Seen

REPUBLISH_WINDOW = 12  # months taken before that are looked at again for a new file


@dataclass(kw_only=True)
class Cursor:
    """What the sensor has taken so far (kept by the orchestrator between ticks, as JSON)."""

    taken: str  # the newest month taken; months up to it count as decided
    digests: dict[str, str] = field(default_factory=dict)  # month -> the digest taken
    pending: dict[str, str] = field(default_factory=dict)  # month -> "size:digest" seen once

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> Cursor:
        data = json.loads(raw)
        return cls(taken=data["taken"], digests=data["digests"], pending=data["pending"])


@dataclass(frozen=True, kw_only=True)
class Take:
    """One month to decide, for one file."""

    month: str
    digest: str
    previous_digest: str | None = None  # set: the month was re-published

    @property
    def run_key(self) -> str:
        return f"{self.month}:{self.digest[:24]}"


def to_look_at(cursor: Cursor, now_month: str) -> list[str]:
    """The months a tick looks at: those taken lately (re-published?) and every month after
    the last taken, up to `now_month`."""
    recent = sorted(cursor.digests)[-REPUBLISH_WINDOW:]
    return recent + month_range(next_month(cursor.taken), now_month)


def tick(cursor: Cursor, seen: dict[str, Seen | None], sizes: dict[str, int | None]) -> Take | None:
    """The next month to take, if any; `cursor` is updated in place (`sizes`: the TLC's
    published size of each month, where its metadata has one)."""
    for month in sorted(seen):
        look = seen[month]
        if look is None:
            continue  # not there (yet), or a gap
        taken = cursor.digests.get(month)
        if month <= cursor.taken and taken in (None, look.digest):
            cursor.digests.setdefault(month, look.digest)  # decided before the sensor ran
            continue
        stamp = f"{look.size}:{look.digest}"
        published = sizes.get(month) == look.size or cursor.pending.get(month) == stamp
        if not published:
            cursor.pending[month] = stamp  # seen once: published if it looks the same next poll
            continue
        cursor.pending.pop(month, None)
        cursor.digests[month] = look.digest
        cursor.taken = max(cursor.taken, month)
        return Take(month=month, digest=look.digest, previous_digest=taken)
    return None
