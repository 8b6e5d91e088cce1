"""Per-replica circuit breaker and the admission limit in front of a generator."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

from llm.base import BreakerState, FailureKind
from llm.errors import GeneratorBusy

#: A refused call should come back after about this long: a CPU worker frees a slot in seconds.
_BUSY_RETRY_S = 1.0


class CircuitBreaker:
    """One replica's breaker, so a dead replica costs one fast skip instead of a failed call.

    Closed until ``failures`` calls in a row fail; then open for ``cooldown_s``; then half-open,
    letting one trial call through: its success closes the breaker, its failure opens it again.
    Owned by one event loop, so no locking.
    """

    def __init__(
        self, *, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1:
            raise ValueError("a breaker needs failures >= 1")
        self._failures = failures
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._opened_at: float | None = None
        self._trial = False
        self.consecutive_failures = 0
        self.errors_total: Counter[str] = Counter()

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._trial or self.retry_after() == 0 else "open"

    @property
    def blocked(self) -> bool:
        """Open and cooling down, or half-open with its one trial already out."""
        return self._opened_at is not None and (self._trial or self.retry_after() > 0)

    def retry_after(self) -> float:
        """Seconds until the breaker half-opens (0 unless it is open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown_s - self._clock())

    def allow(self) -> bool:
        """Whether a call may go to the replica now; when half-open, this call is the trial."""
        if self.blocked:
            return False
        self._trial = self._opened_at is not None
        return True

    def success(self) -> None:
        self._opened_at, self._trial, self.consecutive_failures = None, False, 0

    def failure(self, kind: FailureKind) -> None:
        self.errors_total[kind] += 1
        self.consecutive_failures += 1
        # A failed trial opens it again; a call sent before it opened does not prolong cool-down.
        if self._trial or (self._opened_at is None and self.consecutive_failures >= self._failures):
            self._opened_at, self._trial = self._clock(), False

    def abandon(self) -> None:
        """The trial ended without a verdict (the client went away): let the next call try."""
        self._trial = False


class Admission:
    """At most ``limit`` calls in flight and ``queue`` waiting; the next one is refused."""

    def __init__(self, limit: int, queue: int) -> None:
        if limit < 1 or queue < 0:
            raise ValueError("need max_concurrency >= 1 and max_queue >= 0")
        self._slots = asyncio.Semaphore(limit)
        self._queue = queue
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and self._waiting >= self._queue:
            raise GeneratorBusy(
                f"generator busy: every slot taken and {self._waiting} calls waiting",
                retry_after=_BUSY_RETRY_S,
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()
