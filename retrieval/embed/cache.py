"""Query-embedding cache: a repeated question skips the embedder (~5–10 ms on this CPU).

Keys are the embedder's model and dimension plus the exact text, so switching embedders can
never return a foreign vector. In process (an LRU) or in Redis, shared by replicas; a Redis
error is a miss (logged, counted), never a failed query. Sync on purpose: the retriever runs
in a worker thread.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
from redis import Redis
from redis.exceptions import RedisError

from retrieval.types import EmbedderSpec

log = logging.getLogger("covrag.embed.cache")


class VectorCache(Protocol):
    """Vectors by key; ``hits``, ``misses`` and ``errors`` feed the metrics."""

    hits: int
    misses: int
    errors: int

    def get(self, key: str) -> list[float] | None: ...

    def set(self, key: str, vector: list[float]) -> None: ...

    def close(self) -> None:
        """Finish what is pending; the cache is not used after."""


def vector_key(spec: EmbedderSpec, text: str) -> str:
    return hashlib.sha256(f"{spec.model}\x00{spec.dim}\x00{text}".encode()).hexdigest()


class MemoryVectorCache:
    """An LRU of at most ``max_entries`` vectors, safe across the server's worker threads."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max = max_entries
        self._data: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.errors = 0

    def get(self, key: str) -> list[float] | None:
        with self._lock:
            vector = self._data.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return vector

    def set(self, key: str, vector: list[float]) -> None:
        with self._lock:
            self._data[key] = vector
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def close(self) -> None:
        """Nothing pending: writes are done in ``set``."""


class RedisVectorCache:
    """float32 vectors in Redis under ``prefix`` with a TTL.

    A write is off the caller's path (a miss already paid for the embedding; the SET is ~0.7 ms
    more here): one writer thread sends it, and until then ``get`` answers from the vectors
    still pending, so a question repeated at once is a hit all the same. While Redis hangs,
    at most ``max_pending`` writes wait; later vectors are not cached (memory stays bounded).
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str = "covrag:",
        ttl_s: int = 86_400,
        max_pending: int = 1_000,
    ) -> None:
        self._r = redis
        self._p = f"{prefix}qe:"
        self._ttl_s = ttl_s
        self._max_pending = max_pending
        self._pending: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="covrag-qe-cache")
        self.hits = self.misses = self.errors = 0

    def get(self, key: str) -> list[float] | None:
        with self._lock:
            vector = self._pending.get(key)
        if vector is not None:
            self.hits += 1
            return vector
        try:
            raw: bytes | None = self._r.get(self._p + key)  # type: ignore[assignment]
        except RedisError as exc:
            self.errors += 1
            log.warning("query-embedding cache bypassed: %s", exc)
            return None
        if raw is None:
            self.misses += 1
            return None
        self.hits += 1
        return np.frombuffer(raw, dtype=np.float32).tolist()

    def set(self, key: str, vector: list[float]) -> None:
        with self._lock:
            if len(self._pending) >= self._max_pending:
                self.errors += 1
                log.warning(
                    "query-embedding cache not written: %d writes pending", len(self._pending)
                )
                return
            self._pending[key] = vector
        self._writer.submit(self._write, key, vector)

    def _write(self, key: str, vector: list[float]) -> None:
        try:
            self._r.set(self._p + key, np.asarray(vector, np.float32).tobytes(), ex=self._ttl_s)
        except RedisError as exc:
            self.errors += 1
            log.warning("query-embedding cache not written: %s", exc)
        finally:
            with self._lock:
                self._pending.pop(key, None)

    def close(self) -> None:
        """Send the writes still pending (each bounded by the client's socket timeout)."""
        self._writer.shutdown(wait=True)
