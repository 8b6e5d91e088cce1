"""Query-embedding cache: a repeated question skips the embedder (~8 ms on this CPU).

Keys are the embedder's model and dimension plus the exact text, so switching embedders can
never return a foreign vector. In process (an LRU) or in Redis, shared by replicas; a Redis
error is a miss (logged, counted), never a failed query.

On the event loop, over the pipelined connection the rate limiter uses, not in the retriever's
thread: there redis-py's GET, and its writer thread's SET holding the GIL while the loop waited
to take the retrieval back, cost a new question ~1 ms in the server (see "The query path
without the LLM" in ``docs/performance.md``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from typing import Protocol

import numpy as np
from redis.exceptions import RedisError

from app.state.redis_pipe import PipelinedRedis
from retrieval.types import EmbedderSpec

log = logging.getLogger("covrag.vector_cache")


class VectorCache(Protocol):
    """Vectors by key; ``hits``, ``misses`` and ``errors`` feed the metrics."""

    hits: int
    misses: int
    errors: int

    async def get(self, key: str) -> list[float] | None: ...

    def put(self, key: str, vector: list[float]) -> None:
        """Returns at once: a write never holds up the request that paid for the vector."""

    async def aclose(self) -> None:
        """Finish what is pending; the cache is not used after."""


def vector_key(spec: EmbedderSpec, text: str) -> str:
    return hashlib.sha256(f"{spec.model}\x00{spec.dim}\x00{text}".encode()).hexdigest()


class MemoryVectorCache:
    """An LRU of at most ``max_entries`` vectors (one event loop: no lock)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max = max_entries
        self._data: OrderedDict[str, list[float]] = OrderedDict()
        self.hits = self.misses = self.errors = 0

    async def get(self, key: str) -> list[float] | None:
        vector = self._data.get(key)
        if vector is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return vector

    def put(self, key: str, vector: list[float]) -> None:
        self._data[key] = vector
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    async def aclose(self) -> None:
        """Nothing pending: writes are done in ``put``."""


class RedisVectorCache:
    """float32 vectors in Redis under ``prefix`` with a TTL.

    A write is a task on the loop; until it lands ``get`` answers from the vectors still
    pending, so a question repeated at once is a hit all the same. While Redis hangs, at most
    ``max_pending`` writes wait (each bounded by the connection's timeout); later vectors are
    not cached, so memory stays bounded.
    """

    def __init__(
        self,
        pipe: PipelinedRedis,
        prefix: str = "covrag:",
        ttl_s: int = 86_400,
        max_pending: int = 1_000,
    ) -> None:
        self._pipe = pipe
        self._p = f"{prefix}qe:"
        self._ttl_s = ttl_s
        self._max_pending = max_pending
        self._pending: dict[str, list[float]] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self.hits = self.misses = self.errors = 0

    async def get(self, key: str) -> list[float] | None:
        vector = self._pending.get(key)
        if vector is not None:
            self.hits += 1
            return vector
        try:
            raw: bytes | None = await self._pipe.execute("GET", self._p + key)
        except RedisError as exc:
            self.errors += 1
            log.warning("query-embedding cache bypassed: %s", exc)
            return None
        if raw is None:
            self.misses += 1
            return None
        self.hits += 1
        return np.frombuffer(raw, dtype=np.float32).tolist()

    def put(self, key: str, vector: list[float]) -> None:
        if len(self._pending) >= self._max_pending:
            self.errors += 1
            log.warning("query-embedding cache not written: %d writes pending", len(self._pending))
            return
        self._pending[key] = vector
        task = asyncio.get_running_loop().create_task(self._write(key, vector))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, key: str, vector: list[float]) -> None:
        value = np.asarray(vector, np.float32).tobytes()
        try:
            await self._pipe.execute("SET", self._p + key, value, "EX", self._ttl_s)
        except RedisError as exc:
            self.errors += 1
            log.warning("query-embedding cache not written: %s", exc)
        finally:
            self._pending.pop(key, None)

    async def aclose(self) -> None:
        """Wait for the writes still pending (each bounded by the connection's timeout)."""
        await asyncio.gather(*self._writes)
