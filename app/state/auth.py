"""API keys, per-key rate limits and per-key collection scoping.

Keys come from settings or a secret file and are kept only as SHA-256 digests, compared in
constant time. No keys configured means an open server. Each key may carry a rate limit — a
token bucket refilled at ``rate_limit_per_minute / 60`` per second holding at most
``rate_limit_burst`` tokens — kept atomically in Redis by one Lua script (shared by every
replica) or in process without Redis; and a list of collections it may see and change.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field, SecretStr, model_validator
from redis.exceptions import RedisError

from app.state.redis_pipe import PipelinedRedis

log = logging.getLogger("covrag.auth")

ALL = "*"


class ApiKeySpec(BaseModel):
    """One API key as configured: the key itself (hashed on load) or its SHA-256 hex digest."""

    name: str = Field(min_length=1, description="Who holds the key; in logs and metrics.")
    key: SecretStr | None = Field(None, description="The key; hashed at once, never kept.")
    sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$", description="Or its digest.")
    collections: list[str] = Field([ALL], description='Collections it may use; "*" = all.')
    rate_limit_per_minute: float | None = Field(None, gt=0, description="None = unlimited.")
    rate_limit_burst: int | None = Field(None, ge=1, description="Default: a tenth of a minute.")

    @model_validator(mode="after")
    def _one_secret(self) -> ApiKeySpec:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError(f"API key {self.name!r}: give exactly one of key and sha256")
        return self


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class AuthError(Exception):
    """Missing or unknown key (401)."""


class Forbidden(Exception):
    """The key may not use that collection (403)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class RateLimited(Exception):
    """Over the key's rate limit (429); ``retry_after`` seconds until a token is back."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"rate limit of key {name!r} exceeded; retry in {retry_after:.1f} s")
        self.retry_after = retry_after


class RateLimiterUnavailable(Exception):
    """Redis is down and rate limiting fails closed (503)."""

    retry_after = 5.0


@dataclass(frozen=True)
class Bucket:
    """A key's token bucket: refilled at ``rate_per_s``, holding at most ``burst`` tokens."""

    name: str
    rate_per_s: float
    burst: int


@dataclass(frozen=True)
class Principal:
    """Who is calling: a configured key, or ``anonymous`` on an open server. ``bucket`` is
    None for a key without a rate limit."""

    name: str
    collections: frozenset[str]
    bucket: Bucket | None = None

    def allows(self, collection: str) -> bool:
        return ALL in self.collections or collection in self.collections

    def check(self, collection: str, param: str | None = "collection") -> None:
        if not self.allows(collection):
            raise Forbidden(f"key {self.name!r} may not use collection {collection!r}", param)


ANONYMOUS = Principal("anonymous", frozenset({ALL}))


def _stored_digest(spec: ApiKeySpec) -> bytes:
    if spec.key is not None:
        return digest(spec.key.get_secret_value())
    return bytes.fromhex(spec.sha256 or "")


def _principal(spec: ApiKeySpec) -> Principal:
    per_minute = spec.rate_limit_per_minute
    bucket = None
    if per_minute is not None:
        burst = spec.rate_limit_burst or max(1, math.ceil(per_minute / 10))
        bucket = Bucket(spec.name, per_minute / 60, burst)
    return Principal(spec.name, frozenset(spec.collections), bucket)


class KeyRing:
    """The configured keys by digest; ``identify`` compares against every one in constant time
    so neither timing nor the order of keys says which (or whether one) matched."""

    def __init__(self, specs: list[ApiKeySpec]) -> None:
        self._keys = [(_stored_digest(spec), _principal(spec)) for spec in specs]

    @classmethod
    def load(cls, specs: list[ApiKeySpec], file: Path | None) -> KeyRing:
        """Keys from settings plus the secret ``file`` (a JSON list of the same objects)."""
        if file is not None:
            raw = json.loads(file.read_text())
            specs = [*specs, *(ApiKeySpec.model_validate(item) for item in raw)]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError("API key names must be unique")
        return cls(specs)

    @property
    def open(self) -> bool:
        return not self._keys

    def identify(self, presented: str | None) -> Principal:
        if self.open:
            return ANONYMOUS
        if not presented:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'")
        candidate = digest(presented)
        found: Principal | None = None
        for stored, principal in self._keys:
            if hmac.compare_digest(stored, candidate):
                found = principal
        if found is None:
            raise AuthError("invalid API key")
        return found


class RateLimiter(Protocol):
    """Takes one token from ``bucket``; returns 0 when allowed, else seconds to wait."""

    async def take(self, bucket: Bucket) -> float: ...


class MemoryRateLimiter:
    """Token buckets in this process (one server without Redis)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    async def take(self, bucket: Bucket) -> float:
        now = time.monotonic()
        burst = float(bucket.burst)
        tokens, at = self._buckets.get(bucket.name, (burst, now))
        tokens = min(burst, tokens + (now - at) * bucket.rate_per_s)
        if tokens >= 1:
            self._buckets[bucket.name] = (tokens - 1, now)
            return 0.0
        self._buckets[bucket.name] = (tokens, now)
        return (1 - tokens) / bucket.rate_per_s


#: One atomic step of a token bucket (KEYS[1], rate ARGV[1], burst ARGV[2]), timed by Redis's
#: own clock so replicas agree; leaves the milliseconds to wait (0: taken) in ``wait``. A
#: fragment, so the answer cache can run it and its lookup as one script (``app.state.cache``).
TAKE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1]) / 1000
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
"""


def bucket_script_args(prefix: str, bucket: Bucket) -> tuple[list[str], list[float]]:
    """``TAKE_LUA``'s keys and arguments for ``bucket``."""
    return [f"{prefix}rl:{bucket.name}"], [bucket.rate_per_s, bucket.burst]


class RedisRateLimiter:
    """Token buckets in Redis, one Lua call per request (on the pipelined connection)."""

    def __init__(self, pipe: PipelinedRedis, prefix: str = "covrag:") -> None:
        self._script = pipe.register_script(TAKE_LUA + "return wait")
        self._p = prefix

    async def take(self, bucket: Bucket) -> float:
        keys, args = bucket_script_args(self._p, bucket)
        wait_ms = await self._script(keys=keys, args=args)
        return int(wait_ms) / 1000


class Gate:
    """Authentication then rate limiting, as one call per request."""

    def __init__(
        self,
        keys: KeyRing,
        limiter: RateLimiter,
        on_error: Literal["open", "closed"] = "open",
    ) -> None:
        self.keys = keys
        self._limiter = limiter
        self._on_error = on_error

    async def admit(self, presented: str | None) -> Principal:
        principal = self.keys.identify(presented)
        if principal.bucket is None:
            return principal
        try:
            wait = await self._limiter.take(principal.bucket)
        except RedisError as exc:
            if self._on_error == "closed":
                raise RateLimiterUnavailable(
                    f"rate limiter unavailable (Redis: {exc}); refusing while it is down"
                ) from exc
            log.warning("rate limiter unavailable, admitting %s unchecked: %s", principal.name, exc)
            return principal
        if wait > 0:
            raise RateLimited(principal.name, wait)
        return principal
