"""The answer cache: a repeated question on an unchanged collection costs one lookup, no LLM.

Keys hold everything that shapes an answer — the collection's version, the normalised
question, α, the mode (critic, τ, rounds, top-k, filters) and the model (name, tokens,
temperature) — so a hit is the answer the pipeline would give again. Any write to a collection
(ingest, delete, calibration) bumps its version: old entries become unreachable at once and
expire by TTL. Backends: Redis (shared by replicas) or an in-process LRU; Redis errors bypass
the cache (logged and counted), they never fail a query.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.state.auth import TAKE_LUA, Bucket, RateLimited, RateLimiter, bucket_script_args
from app.state.redis_pipe import PipelinedRedis

log = logging.getLogger("covrag.cache")


class AnswerStore(Protocol):
    """Entries by (collection, version, digest) plus a version counter per collection;
    ``RedisAnswers`` and ``MemoryAnswers`` provide them."""

    async def lookup(
        self, collection: str, digest: str, bucket: Bucket | None = None
    ) -> tuple[float, int, bytes | None]:
        """Seconds to wait for a token of ``bucket`` (0: taken, or no bucket), then the
        collection's current version and the entry stored under it, in one step; over the
        limit, nothing is looked up (version 0, no entry)."""
        ...

    async def store(
        self, collection: str, version: int, digest: str, value: bytes, ttl_s: int
    ) -> None: ...

    async def bump(self, collection: str) -> None:
        """A new version: entries of older versions are never looked up again."""
        ...


class MemoryAnswers:
    """An LRU of at most ``max_entries`` with per-entry expiry, for a server without Redis.
    Versions live apart from the LRU: evicting one would resurrect old answers. ``limiter``
    is the server's own, whose buckets a lookup with a bucket draws on."""

    def __init__(self, limiter: RateLimiter, max_entries: int = 10_000) -> None:
        self._limiter = limiter
        self._max = max_entries
        self._data: OrderedDict[tuple[str, int, str], tuple[bytes, float]] = OrderedDict()
        self._versions: dict[str, int] = {}

    async def lookup(
        self, collection: str, digest: str, bucket: Bucket | None = None
    ) -> tuple[float, int, bytes | None]:
        if bucket is not None and (wait := await self._limiter.take(bucket)) > 0:
            return wait, 0, None
        version = self._versions.get(collection, 0)
        key = (collection, version, digest)
        item = self._data.get(key)
        if item is None:
            return 0.0, version, None
        if item[1] < time.monotonic():
            del self._data[key]
            return 0.0, version, None
        self._data.move_to_end(key)
        return 0.0, version, item[0]

    async def store(
        self, collection: str, version: int, digest: str, value: bytes, ttl_s: int
    ) -> None:
        self._data[(collection, version, digest)] = (value, time.monotonic() + ttl_s)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    async def bump(self, collection: str) -> None:
        self._versions[collection] = self._versions.get(collection, 0) + 1


#: Version and entry in one round trip (the entry's key depends on the version); the last
#: key and the last two arguments, so it can follow ``TAKE_LUA``. Keys are built in the
#: script, so this needs a single Redis, not Redis Cluster.
_LOOKUP = """
local v = redis.call('GET', KEYS[#KEYS]) or '0'
return {0, v, redis.call('GET', ARGV[#ARGV - 1] .. v .. ':' .. ARGV[#ARGV])}
"""
#: A cache hit's rate-limit token and lookup in one round trip, not two: a redis-py call costs
#: this process ~170 µs of CPU, and the two were ~30 % of a hit (py-spy under bench/serve.py).
TAKE_THEN_LOOKUP = TAKE_LUA + "if wait > 0 then return {wait} end" + _LOOKUP


class RedisAnswers:
    """The same in a shared Redis under ``prefix``. Version counters carry no TTL: under a
    ``maxmemory`` limit use a ``volatile-*`` policy so they are never evicted."""

    def __init__(self, redis: Redis, pipe: PipelinedRedis, prefix: str = "covrag:") -> None:
        self._r = redis
        self._p = prefix
        self._lookup = pipe.register_script(_LOOKUP)  # every query's call: the pipelined one
        self._take_then_lookup = pipe.register_script(TAKE_THEN_LOOKUP)

    async def lookup(
        self, collection: str, digest: str, bucket: Bucket | None = None
    ) -> tuple[float, int, bytes | None]:
        keys = [f"{self._p}cv:{collection}"]
        args: list[str | float] = [f"{self._p}ans:{collection}:", digest]
        script = self._lookup
        if bucket is not None:
            bucket_keys, bucket_args = bucket_script_args(self._p, bucket)
            keys, args, script = bucket_keys + keys, [*bucket_args, *args], self._take_then_lookup
        reply = await script(keys=keys, args=args)
        if len(reply) == 1:  # over the limit: {wait}
            return int(reply[0]) / 1000, 0, None
        return 0.0, int(reply[1]), reply[2]

    async def store(
        self, collection: str, version: int, digest: str, value: bytes, ttl_s: int
    ) -> None:
        await self._r.set(f"{self._p}ans:{collection}:{version}:{digest}", value, ex=ttl_s)

    async def bump(self, collection: str) -> None:
        await self._r.incr(f"{self._p}cv:{collection}")


_SPACE = re.compile(r"\s+")


def normalize_question(question: str) -> str:
    """Case, Unicode form, spacing and a trailing '?' or '.' do not change the answer."""
    text = _SPACE.sub(" ", unicodedata.normalize("NFKC", question)).strip().casefold()
    return text.rstrip("?.! ").strip()


@dataclass
class CacheStats:
    """Backend errors (hits and misses are counted by the callers, in the metrics: a miss in
    the cached-answer path is looked up again by the route)."""

    errors: int = 0


@dataclass(frozen=True)
class Entry:
    """Where a response is (or will be) cached; ``value`` is the hit, if any."""

    collection: str
    version: int
    digest: str
    value: bytes | None


class AnswerCache:
    """Finished query responses (JSON bytes) by what produced them; see the module docstring.

    An entry is stored without ``request_id`` and ``cached``: ``respond`` appends this
    request's, so a hit costs no JSON parsing.
    """

    def __init__(self, answers: AnswerStore, ttl_s: int) -> None:
        self._answers = answers
        self._ttl_s = ttl_s
        self._pending: set[str] = set()  # invalidations Redis missed, replayed before reads
        self.stats = CacheStats()

    @property
    def enabled(self) -> bool:
        return self._ttl_s > 0

    async def lookup(
        self, collection: str, question: str, shape: dict[str, Any], bucket: Bucket | None = None
    ) -> Entry | None:
        """The entry for this question, hit or miss; None when off or the backend failed.
        With ``bucket``, first takes a token of it, or raises ``RateLimited`` (a cache hit
        then needs one backend call, not a limiter's and a lookup's)."""
        if not self.enabled:
            return None
        blob = json.dumps([normalize_question(question), shape], sort_keys=True, default=str)
        digest = hashlib.sha256(blob.encode()).hexdigest()
        try:
            for changed in list(self._pending):
                await self._answers.bump(changed)
                self._pending.discard(changed)
            wait, version, value = await self._answers.lookup(collection, digest, bucket)
        except RedisError as exc:
            self._failed("read", exc)
            return None
        if wait > 0:
            assert bucket is not None  # only a bucket can be over its limit
            raise RateLimited(bucket.name, wait)
        return Entry(collection, version, digest, value)

    async def put(self, entry: Entry | None, body: bytes) -> None:
        """Store ``body``: a JSON object without ``request_id`` and ``cached``."""
        if entry is None:
            return
        try:
            await self._answers.store(
                entry.collection, entry.version, entry.digest, body, self._ttl_s
            )
        except RedisError as exc:
            self._failed("write", exc)

    @staticmethod
    def respond(body: bytes, request_id: str) -> bytes:
        """A stored body as this request's answer: its id, and ``cached: true``."""
        tail = f',"request_id":{json.dumps(request_id)},"cached":true}}'
        return body[:-1] + tail.encode()

    async def invalidate(self, collection: str) -> None:
        """The collection changed: every answer cached for it is now unreachable."""
        try:
            await self._answers.bump(collection)
        except RedisError as exc:
            self._pending.add(collection)  # no read is served before this is replayed
            self._failed("invalidate", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        self.stats.errors += 1
        log.warning("answer cache bypassed: could not %s the cache: %s", what, exc)
