"""The query-embedding caches: a Redis write leaves the caller's path and still never misses its
own write; a Redis outage is a miss, never an error (real Redis, started, frozen and killed
here); the LRU keeps the most recent vectors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import redis

from app.state.redis_pipe import PipelinedRedis
from app.state.vector_cache import MemoryVectorCache, RedisVectorCache
from tests.redis_server import RedisServer

VECTOR = np.linspace(-1, 1, 384, dtype=np.float32).tolist()


def test_a_write_is_read_back_before_and_after_it_lands(redis_url: str) -> None:
    async def scenario() -> tuple[int, int, int]:
        pipe = PipelinedRedis.from_url(redis_url, timeout_s=2)
        cache = RedisVectorCache(pipe, prefix="vc-test:")
        assert await cache.get("k") is None
        cache.put("k", VECTOR)  # returns at once: the SET is a task on the loop
        assert await cache.get("k") == VECTOR  # pending or written: a hit either way
        await cache.aclose()  # the write has landed once aclose returns
        other = RedisVectorCache(pipe, prefix="vc-test:")  # another replica: Redis only
        assert await other.get("k") == VECTOR
        await other.aclose()
        await pipe.aclose()
        return cache.hits, cache.misses, other.hits

    assert asyncio.run(scenario()) == (1, 1, 1)
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ttl("vc-test:qe:k") > 0
    finally:
        client.delete("vc-test:qe:k")
        client.close()


def test_redis_down_is_a_miss_and_a_lost_write(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()

    async def scenario() -> None:
        pipe = PipelinedRedis.from_url(server.url, timeout_s=1)
        cache = RedisVectorCache(pipe)
        server.stop()
        assert await cache.get("k") is None
        cache.put("k", VECTOR)  # returns at once; the write fails in its task
        await asyncio.wait_for(cache.aclose(), 5)
        assert cache.errors == 2
        assert await cache.get("k") is None  # nothing pending is kept past a failed write
        assert cache.errors == 3
        await pipe.aclose()

    asyncio.run(scenario())


def test_a_hung_redis_bounds_the_pending_writes(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()

    async def scenario() -> None:
        pipe = PipelinedRedis.from_url(server.url, timeout_s=1)
        cache = RedisVectorCache(pipe, max_pending=2)
        assert await cache.get("warm") is None  # connected before Redis freezes
        server.pause()  # SIGSTOP: the SETs hang until their deadline
        for key in ("a", "b", "c"):
            cache.put(key, VECTOR)
        assert cache.errors == 1  # "c": two writes were already waiting, so it is not kept
        assert await cache.get("a") == VECTOR and await cache.get("b") == VECTOR  # no Redis call
        await asyncio.wait_for(cache.aclose(), 5)  # "a" and "b" time out
        assert cache.errors == 3
        await pipe.aclose()

    try:
        asyncio.run(scenario())
    finally:
        server.resume()
        server.stop()


def test_the_lru_keeps_the_most_recent_vectors() -> None:
    async def scenario() -> MemoryVectorCache:
        cache = MemoryVectorCache(max_entries=2)
        cache.put("a", VECTOR)
        cache.put("b", VECTOR)
        assert await cache.get("a") == VECTOR  # "a" is now the most recent
        cache.put("c", VECTOR)  # evicts "b"
        assert await cache.get("b") is None
        assert await cache.get("c") == VECTOR and await cache.get("a") == VECTOR
        return cache

    cache = asyncio.run(scenario())
    assert (cache.hits, cache.misses, cache.errors) == (3, 1, 0)
