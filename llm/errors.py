"""The generator client's errors; ``retry_after`` becomes the HTTP Retry-After header."""

from __future__ import annotations


class GeneratorError(Exception):
    """Base of the generator's errors; ``retry_after`` (seconds), when known, becomes the
    response's Retry-After header."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GeneratorUnavailable(GeneratorError):
    """No replica accepted the request (refused, reset, 5xx, every circuit open)."""


class GeneratorBusy(GeneratorError):
    """Every slot is taken and the queue is full: come back after ``retry_after``."""


class GeneratorTimeout(GeneratorError):
    """The generator did not finish within the configured deadline."""


class GeneratorRejected(GeneratorError):
    """A replica refused the request itself (4xx), e.g. a prompt over the model's length."""
