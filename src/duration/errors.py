"""The one exception type whose message is shown to users as a single line."""


class DurationError(Exception):
    """A problem the user can fix; its message says what is wrong and what to do."""
