"""The pipelined Redis connection against a real Redis: replies reach their own callers,
scripts survive a flushed script cache, and a dead or frozen Redis (also mid-handshake) is a
clean ``RedisError`` in bounded time, with the next call reconnecting. Each runs on asyncio's own
loop and on uvloop, which ``covrag serve`` uses (their transports differ)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.exceptions import ConnectionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from uvloop import new_event_loop

from app.state.redis_pipe import PipelinedRedis
from tests.redis_server import RedisServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    factory = new_event_loop if request.param == "uvloop" else None

    def run(main: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main)

    return run


def test_concurrent_commands_get_their_own_replies(server: RedisServer, run: Run) -> None:
    async def scenario() -> None:
        pipe = PipelinedRedis.from_url(server.url, timeout_s=2)
        n = 300
        await asyncio.gather(*(pipe.execute("SET", f"k{i}", f"v{i}") for i in range(n)))
        got = await asyncio.gather(*(pipe.execute("GET", f"k{i}") for i in range(n)))
        assert got == [f"v{i}".encode() for i in range(n)]
        # An error reply fails its own caller only.
        results = await asyncio.gather(
            pipe.execute("INCR", "k0"), pipe.execute("INCR", "n"), return_exceptions=True
        )
        assert isinstance(results[0], ResponseError) and results[1] == 1
        # A caller that gives up after sending does not shift the replies of the next ones.
        abandoned = asyncio.create_task(pipe.execute("GET", "k1"))
        await asyncio.sleep(0)  # queued
        abandoned.cancel()
        assert await pipe.execute("GET", "k2") == b"v2"
        await pipe.aclose()

    run(scenario())


def test_scripts_match_redis_py_and_survive_a_flushed_cache(server: RedisServer, run: Run) -> None:
    lua = "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}"

    async def scenario() -> None:
        pipe = PipelinedRedis.from_url(server.url, timeout_s=2)
        reference = redis.asyncio.Redis.from_url(server.url)
        ours, theirs = pipe.register_script(lua), reference.register_script(lua)
        assert ours.sha == theirs.sha
        assert await ours(keys=["c"], args=[1.5]) == [b"c", b"1.5", 1]  # not yet loaded: EVAL
        assert await theirs(keys=["c"], args=[1.5]) == [b"c", b"1.5", 2]
        await reference.script_flush()  # as after a Redis restart
        assert await ours(keys=["c"], args=["x"]) == [b"c", b"x", 3]
        assert await reference.script_exists(ours.sha) == [True]
        await pipe.aclose()
        await reference.aclose()

    run(scenario())


def test_password_and_database_come_from_the_url(server: RedisServer, run: Run) -> None:
    admin = redis.Redis.from_url(server.url)
    admin.config_set("requirepass", "s3cret")
    base = f"127.0.0.1:{server.port}"

    async def scenario() -> None:
        pipe = PipelinedRedis.from_url(f"redis://:s3cret@{base}/3", timeout_s=2)
        assert await pipe.execute("SET", "where", "db3") == b"OK"
        await pipe.aclose()
        wrong = PipelinedRedis.from_url(f"redis://:nope@{base}/0", timeout_s=2)
        with pytest.raises(ResponseError, match=r"WRONGPASS|invalid"):
            await wrong.execute("PING")
        with pytest.raises(ResponseError):  # still refused: nothing half set up was kept
            await wrong.execute("PING")

    run(scenario())
    authed = redis.Redis.from_url(f"redis://:s3cret@{base}/3")
    assert authed.get("where") == b"db3"
    assert redis.Redis.from_url(f"redis://:s3cret@{base}/0").get("where") is None


def test_dead_frozen_and_returning_redis(server: RedisServer, run: Run) -> None:
    async def scenario() -> None:
        pipe = PipelinedRedis.from_url(server.url, timeout_s=0.5)
        assert await pipe.execute("PING") == b"PONG"

        server.pause()  # a hang: every call owed a reply fails at its deadline, not later
        start = time.monotonic()
        calls = asyncio.gather(*(pipe.execute("PING") for _ in range(5)), return_exceptions=True)
        results = await asyncio.wait_for(calls, 5)  # a hang here is the bug, not a slow test
        assert all(isinstance(r, RedisTimeoutError) for r in results), results
        assert time.monotonic() - start < 2
        server.resume()
        assert await pipe.execute("PING") == b"PONG"  # a new connection

        server.stop()  # gone: a refused connection is an error at once
        with pytest.raises(ConnectionError):
            await pipe.execute("PING")
        server.start()
        assert await pipe.execute("PING") == b"PONG"
        await pipe.aclose()

        # Frozen again, for new connections: they hang in their handshake (SELECT). Callers
        # share one attempt, so ten of them fail after one timeout, not ten in a row.
        fresh = PipelinedRedis.from_url(server.url.replace("/0", "/1"), timeout_s=0.3)
        server.pause()
        start = time.monotonic()
        calls = asyncio.gather(*(fresh.execute("PING") for _ in range(10)), return_exceptions=True)
        results = await asyncio.wait_for(calls, 10)
        assert all(isinstance(r, RedisTimeoutError) for r in results), results
        assert time.monotonic() - start < 2  # one after another would be 3 s
        server.resume()
        assert await fresh.execute("PING") == b"PONG"
        await fresh.aclose()

    run(scenario())


def test_a_unix_socket_url(tmp_path: Path, run: Run) -> None:
    sock = tmp_path / "redis.sock"
    args = ["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", ""]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

        async def scenario() -> None:
            pipe = PipelinedRedis.from_url(f"unix://{sock}?db=2", timeout_s=2)
            assert await pipe.execute("SET", "via", "unix") == b"OK"
            await pipe.aclose()

        run(scenario())
        assert redis.Redis.from_url(f"unix://{sock}?db=2").get("via") == b"unix"
    finally:
        proc.kill()
        proc.wait()
