"""The name models logged by duration 0.1.0 import: their code file says
`from duration.model import DurationModel`. Where this package is imported before such a
model loads, that name resolves here (tests/fixtures/legacy-0.1 keeps two of them)."""

from duration.core.model import DurationModel

__all__ = ["DurationModel"]
