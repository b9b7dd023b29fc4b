"""The exceptions shown to users: one line, no traceback."""


class DurationError(Exception):
    """A problem the user can fix; its message says what is wrong and what to do."""


class Stopped(BaseException):
    """Work stopped on request (Ctrl-C, SIGTERM or a timeout); its message says which.

    A BaseException, like KeyboardInterrupt, so no library's `except Exception` swallows it.
    """
