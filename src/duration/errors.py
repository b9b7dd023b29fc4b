"""The exceptions shown to users: one line, no traceback."""

import re

_RAISED = re.compile(r"^[A-Za-z_][\w.]*: \S")  # "zipfile.BadZipFile: File is not a zip file"


def cause(text: str) -> str:
    """The first exception `text` (a log, a child's stderr) reports: the cause, not the
    wrapper; else its last line."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    raised = [ln for ln in lines if _RAISED.match(ln)]
    return (raised or lines or ["no output"])[0 if raised else -1].strip()[:200]


class DurationError(Exception):
    """A problem the user can fix; its message says what is wrong and what to do."""


class NotPublished(DurationError):
    """The source has no file for the month asked for (a gap, or a month not out yet)."""


class Stopped(BaseException):
    """Work stopped on request (Ctrl-C, SIGTERM or a timeout); its message says which.

    A BaseException, like KeyboardInterrupt, so no library's `except Exception` swallows it.
    """
