"""The Redis query-embedding cache writes off the caller's path and still never misses its own
write; a Redis outage is a miss, never an error (real Redis, started and killed here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from redis import Redis

from retrieval.embed.cache import RedisVectorCache
from tests.redis_server import RedisServer

VECTOR = np.linspace(-1, 1, 384, dtype=np.float32).tolist()


def test_a_write_is_read_back_before_and_after_it_lands(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    cache = RedisVectorCache(client, prefix="vc-test:")
    try:
        assert cache.get("k") is None
        cache.set("k", VECTOR)
        assert cache.get("k") == VECTOR  # pending or written: a hit either way
    finally:
        cache.close()  # the write has landed once close returns
    other = RedisVectorCache(client, prefix="vc-test:")  # another replica: Redis only
    try:
        assert other.get("k") == VECTOR
        assert client.ttl("vc-test:qe:k") > 0
        assert (cache.hits, cache.misses, other.hits) == (1, 1, 1)
    finally:
        other.close()
        client.delete("vc-test:qe:k")
        client.close()


def test_redis_down_is_a_miss_and_a_lost_write(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    client = Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    cache = RedisVectorCache(client)
    try:
        server.stop()
        assert cache.get("k") is None
        cache.set("k", VECTOR)  # returns at once; the write fails in the writer thread
        cache.close()
        assert cache.errors == 2
        assert cache.get("k") is None  # nothing pending is kept past a failed write
        assert cache.errors == 3
    finally:
        client.close()


def test_a_hung_redis_bounds_the_pending_writes(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    client = Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    cache = RedisVectorCache(client, max_pending=2)
    try:
        server.pause()  # SIGSTOP: the writer's SET hangs until its timeout
        for key in ("a", "b", "c"):
            cache.set(key, VECTOR)
        assert cache.errors == 1  # "c": two writes were already waiting, so it is not kept
        assert cache.get("a") == VECTOR and cache.get("b") == VECTOR  # pending: no Redis call
        cache.close()  # "a" and "b" time out in the writer
        assert cache.errors == 3
    finally:
        server.resume()
        server.stop()
        client.close()
