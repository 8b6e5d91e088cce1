"""Settings of the process around the pipeline: Redis and caches, API keys, jobs, the HTTP
server, the CLI as a client, the local vLLM worker."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator

from app.config.group import Group
from app.state.auth import ApiKeySpec

#: The checkout covrag runs from (where scripts/setup.sh makes its virtualenvs).
CHECKOUT = Path(__file__).resolve().parents[2]


class RedisSettings(Group):
    """The Redis that replicas share (answers, rate limits, jobs, query embeddings)."""

    url: str | None = Field(
        None,
        validation_alias="COVRAG_REDIS_URL",
        description="Redis for cache, rate limits and jobs; unset = in-process equivalents.",
    )
    password: str | None = Field(
        None,
        validation_alias="COVRAG_REDIS_PASSWORD",
        description="Put into COVRAG_REDIS_URL URL-escaped, so any character works (@, :, /).",
    )
    prefix: str = Field(
        "covrag:",
        validation_alias="COVRAG_REDIS_PREFIX",
        description="Prefix of every Redis key covrag writes.",
    )
    timeout_s: float = Field(
        0.5,
        gt=0,
        validation_alias="COVRAG_REDIS_TIMEOUT_S",
        description="Per-command Redis timeout.",
    )

    @model_validator(mode="after")
    def _password_into_url(self) -> RedisSettings:
        """A password from a Secret cannot be escaped by Kubernetes' ``$(VAR)`` substitution:
        take it apart from the URL and escape it here."""
        if self.password is not None and self.url is not None:
            url = urlsplit(self.url)
            user = quote(url.username, safe="") if url.username else ""
            host = url.netloc.rpartition("@")[2]
            netloc = f"{user}:{quote(self.password, safe='')}@{host}"
            self.url = urlunsplit(url._replace(netloc=netloc))
        return self


class CacheSettings(Group):
    """The answer cache and, without Redis, the in-process caches' size."""

    answer_ttl_s: int = Field(
        600,
        ge=0,
        validation_alias="COVRAG_ANSWER_CACHE_TTL_S",
        description="Seconds a cached answer lives; 0 turns the answer cache off.",
    )
    max_entries: int = Field(
        10_000,
        ge=1,
        validation_alias="COVRAG_CACHE_MAX_ENTRIES",
        description="In-process caches (no Redis): answers and query embeddings.",
    )


class AuthSettings(Group):
    """API keys and what rate limiting does when it cannot count."""

    api_keys: list[ApiKeySpec] = Field(
        [],
        validation_alias="COVRAG_API_KEYS",
        description='API keys, a JSON list of {"name", "key" or "sha256", "collections", '
        '"rate_limit_per_minute", "rate_limit_burst"}; none (and no file) = open server.',
    )
    api_keys_file: Path | None = Field(
        None,
        validation_alias="COVRAG_API_KEYS_FILE",
        description="A secret file with more keys (same JSON).",
    )
    rate_limit_on_error: Literal["open", "closed"] = Field(
        "open",
        validation_alias="COVRAG_RATE_LIMIT_ON_ERROR",
        description="Redis down: admit requests unchecked (open) or answer 503 (closed).",
    )


class JobSettings(Group):
    """Background jobs (ingestion, calibration, indexing) and their recovery."""

    lease_s: float = Field(
        30.0,
        gt=0,
        validation_alias="COVRAG_JOB_LEASE_S",
        description="A job whose runner is silent this long is resumed elsewhere.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        validation_alias="COVRAG_JOB_MAX_ATTEMPTS",
        description="Interrupted runs before a job fails.",
    )


class ServerSettings(Group):
    """`covrag serve`: bind address, shutdown, logs, telemetry, readiness."""

    host: str = Field(
        "127.0.0.1", validation_alias="COVRAG_HOST", description="Bind address of `covrag serve`."
    )
    port: int = Field(
        8080, ge=1, le=65535, validation_alias="COVRAG_PORT", description="Port of `covrag serve`."
    )
    shutdown_grace_s: float = Field(
        30.0,
        ge=0,
        validation_alias="COVRAG_SHUTDOWN_GRACE_S",
        description="On SIGTERM, in-flight requests get this long to finish.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", validation_alias="COVRAG_LOG_LEVEL", description="Log level of `covrag serve`."
    )
    log_format: Literal["json", "text"] = Field(
        "json",
        validation_alias="COVRAG_LOG_FORMAT",
        description="`covrag serve` logs: one JSON object per line (with the request id), or text.",
    )
    otel: bool = Field(
        False,
        validation_alias="COVRAG_OTEL",
        description="FastAPI's OpenTelemetry spans, metrics and logs, to the process's providers. "
        "Off: /metrics and the JSON logs cover the same, and the per-request provider check "
        "costs ~5 % of a cached answer.",
    )
    ready_timeout_s: float = Field(
        5.0,
        gt=0,
        validation_alias="COVRAG_READY_TIMEOUT_S",
        description="Bound on each /readyz check.",
    )
    require_calibration: bool = Field(
        False,
        validation_alias="COVRAG_REQUIRE_CALIBRATION",
        description="/readyz fails unless the default collection has a fresh calibration.",
    )
    ready_requires_workers: bool = Field(
        False,
        validation_alias="COVRAG_READY_REQUIRES_WORKERS",
        description="/readyz fails while the generator, the remote embedder or the reranker "
        "worker is down (strict); by default it only reports them.",
    )


class ClientSettings(Group):
    """The CLI as a client of a running server."""

    url: str = Field(
        "http://127.0.0.1:8080",
        validation_alias="COVRAG_URL",
        description="The server `covrag ask`, `ingest`, `calibrate`, `index`, `collections` "
        "and `jobs` talk to (unless --local).",
    )
    api_key: str | None = Field(
        None, validation_alias="COVRAG_API_KEY", description="The API key those commands send."
    )


class WorkerSettings(Group):
    """The local vLLM CPU workers `covrag worker vllm` starts."""

    python: Path = Field(
        Path(".venv-vllm/bin/python"),
        validation_alias="COVRAG_VLLM_PYTHON",
        validate_default=True,
        description="Python of the vLLM CPU virtualenv; a relative path is the checkout's "
        "when it is there (scripts/setup.sh makes it), so any directory works, else the "
        "directory covrag starts in.",
    )

    @field_validator("python")
    @classmethod
    def _in_checkout(cls, value: Path) -> Path:
        there = CHECKOUT / value
        return there if not value.is_absolute() and there.exists() else value

    port: int = Field(
        8100,
        ge=1,
        le=65535,
        validation_alias="COVRAG_VLLM_PORT",
        description="Port of the generator worker.",
    )
    embed_port: int = Field(
        8101,
        ge=1,
        le=65535,
        validation_alias="COVRAG_VLLM_EMBED_PORT",
        description="Port of the embed worker.",
    )
    start_timeout_s: float = Field(
        300.0,
        gt=0,
        validation_alias="COVRAG_VLLM_START_TIMEOUT_S",
        description="Wait for /health this long.",
    )
