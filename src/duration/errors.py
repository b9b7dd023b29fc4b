"""The exceptions shown to users (one line, no traceback), and the helpers that word them."""

from __future__ import annotations

import re

_RAISED = re.compile(r"^[A-Za-z_][\w.]*: \S")  # "zipfile.BadZipFile: File is not a zip file"


def cause(text: str) -> str:
    """The first exception `text` (a log, a child's stderr) reports: the cause, not the
    wrapper; else its last line."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    raised = [ln for ln in lines if _RAISED.match(ln)]
    return (raised or lines or ["no output"])[0 if raised else -1].strip()[:200]


def redact(uri: str) -> str:
    """`uri` with any password replaced by ***, for messages and state files."""
    return re.sub(r"(://[^:/@]+:)[^/]*@", r"\1***@", uri)


def one_line(e: BaseException | str, limit: int = 400) -> str:
    """An error's message on one line, at most `limit` characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DurationError(Exception):
    """A problem the user can fix; its message says what is wrong and what to do."""


class NotPublished(DurationError):
    """The source has no file for the month asked for (a gap, or a month not out yet)."""


class Stopped(BaseException):
    """Work stopped on request (Ctrl-C, SIGTERM or a timeout); its message says which.

    A BaseException, like KeyboardInterrupt, so no library's `except Exception` swallows it.
    """
