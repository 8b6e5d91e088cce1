"""One Redis connection for the calls every request makes: the rate-limit token, the
answer-cache lookup and the question's cached embedding.

Commands from all in-flight requests are written together once per event-loop turn and
matched to their replies in order (Redis answers a connection's commands in order). redis-py
spends ~195 µs of CPU on a script call here (pool checkout, retry wrapper, event dispatch, a
socket write and a read of its own); this spends ~18 µs, 32 callers at a time
(``bench/redis_calls.py``; py-spy had redis-py at 29 % of a cache hit's time). Everything
else keeps using redis-py.

Errors are redis-py's, so callers handle one family: ``ConnectionError`` when Redis cannot be
reached or the connection drops, ``TimeoutError`` when no reply comes within ``timeout_s``
(the connection is then dropped: later replies could not be matched), ``ResponseError`` for
an error reply. The next call reconnects.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError, InvalidResponse, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | bytes | int | float


class _Connection(asyncio.Protocol):
    """The socket, the replies still owed (oldest first, with their deadlines) and the
    commands not yet written."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self._owed: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._unsent: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def open(self) -> bool:
        return self._transport is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, args: Sequence[Arg]) -> asyncio.Future[Any]:
        """The reply's future; the command goes out with the others of this loop turn."""
        if self._transport is None:
            raise ConnectionError("the Redis connection is closed")
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._unsent:
            loop.call_soon(self._flush)
        # hiredis's stub types the argument as a 1-tuple; it takes any number of items.
        self._unsent.append(hiredis.pack_command(tuple(args)))  # type: ignore[arg-type]
        deadline = loop.time() + self._timeout_s
        self._owed.append((reply, deadline))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._check_deadline)
        return reply

    def _flush(self) -> None:
        if self._transport is not None and self._unsent:
            self._transport.write(b"".join(self._unsent))
        self._unsent.clear()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                if not self._owed:
                    self._drop(ConnectionError("Redis sent a reply no command asked for"))
                    return
                waiter, _ = self._owed.popleft()
                if waiter.done():  # its caller gave up (cancelled); the order still holds
                    continue
                if isinstance(reply, ResponseError):
                    waiter.set_exception(reply)
                else:
                    waiter.set_result(reply)
        except InvalidResponse as exc:
            self._drop(ConnectionError(f"Redis sent an unreadable reply: {exc}"))

    def _check_deadline(self) -> None:
        """One timer per connection, set to the oldest owed reply's deadline."""
        self._timer = None
        if not self._owed:
            return
        loop = asyncio.get_running_loop()
        deadline = self._owed[0][1]
        if loop.time() >= deadline:
            self._drop(RedisTimeoutError(f"Redis did not answer within {self._timeout_s} s"))
        else:
            self._timer = loop.call_at(deadline, self._check_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._drop(ConnectionError(f"the Redis connection was lost: {exc or 'closed'}"))

    def _drop(self, error: RedisError) -> None:
        """Close, and fail every reply still owed with ``error``."""
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._unsent.clear()
        while self._owed:
            waiter, _ = self._owed.popleft()
            if not waiter.done():
                waiter.set_exception(type(error)(*error.args))

    def close(self) -> None:
        self._drop(ConnectionError("the Redis connection was closed"))


class PipelinedRedis:
    """Reached like ``redis.asyncio.Redis.from_url`` (``redis://``, ``rediss://``,
    ``unix://``; user, password, database and the ``ssl_*`` options from the URL)."""

    def __init__(
        self,
        *,
        timeout_s: float,
        host: str = "localhost",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._host, self._port, self._path, self._tls = host, port, path, tls
        self._handshake: list[tuple[Arg, ...]] = []
        if password is not None:
            self._handshake.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._handshake.append(("SELECT", db))
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    @classmethod
    def from_url(cls, url: str, timeout_s: float) -> PipelinedRedis:
        kw = parse_url(url)
        tls = None
        if kw.pop("connection_class", None) is SSLConnection:  # its context, as redis-py's
            tls = SSLConnection(**kw).ssl_context.get()  # a plain object: nothing connects
        return cls(
            timeout_s=timeout_s,
            host=kw.get("host", "localhost"),
            port=kw.get("port", 6379),
            path=kw.get("path"),
            db=kw.get("db", 0),
            username=kw.get("username"),
            password=kw.get("password"),
            tls=tls,
        )

    async def execute(self, *args: Arg) -> Any:
        """One command's reply."""
        conn = self._conn
        if conn is None or not conn.open:
            conn = await self._connection()
        return await conn.send(args)

    def register_script(self, lua: str) -> PipelinedScript:
        return PipelinedScript(self, lua)

    async def _connection(self) -> _Connection:
        """Callers that find no connection share one attempt: while Redis does not answer,
        each waits one timeout, not one per caller ahead of it."""
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)  # a caller's cancel is not everyone's

    def _connected(self, attempt: asyncio.Task[_Connection]) -> None:
        self._connecting = None
        if not attempt.cancelled() and attempt.exception() is None:
            self._conn = attempt.result()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        timeout = self._timeout_s

        def protocol() -> _Connection:
            return _Connection(timeout)

        where = self._path or f"{self._host}:{self._port}"
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(timeout):
                if self._path is not None:
                    _, conn = await loop.create_unix_connection(protocol, self._path)
                else:
                    _, conn = await loop.create_connection(
                        protocol, self._host, self._port, ssl=self._tls
                    )
                await asyncio.gather(*(conn.send(command) for command in self._handshake))
        except BaseException as exc:
            if conn is not None:
                conn.close()  # a refused AUTH or SELECT: no half-set-up connection is kept
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError(f"connecting to Redis at {where}: timed out") from exc
            if isinstance(exc, OSError):
                raise ConnectionError(f"connecting to Redis at {where}: {exc}") from exc
            raise
        return conn

    async def aclose(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PipelinedScript:
    """A Lua script called like redis-py's: by SHA, sent whole once when Redis lacks it."""

    def __init__(self, redis: PipelinedRedis, lua: str) -> None:
        self._redis = redis
        self._lua = lua
        self.sha = hashlib.sha1(lua.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        try:
            return await self._redis.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self._redis.execute("EVAL", self._lua, len(keys), *keys, *args)
