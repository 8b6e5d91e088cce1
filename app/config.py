"""All of covrag's settings in one pydantic-settings class (env prefix ``COVRAG_``).

Every field is documented in docs/configuration.md, which scripts/settings_table.py writes.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.state.auth import ApiKeySpec


class Settings(BaseSettings):
    """Runtime configuration, read from ``COVRAG_*`` environment variables and ``.env``."""

    model_config = SettingsConfigDict(env_prefix="COVRAG_", env_file=".env", extra="ignore")

    # --- storage -------------------------------------------------------------------------
    data_dir: Path = Field(
        Path(".covrag"),
        description="Models, Edge shards, corpus cache, logs; a relative path is resolved once, "
        "against the directory covrag starts in.",
    )
    store: Literal["edge", "qdrant"] = Field(
        "edge", description="edge = Qdrant Edge in process; qdrant = qdrant-client."
    )
    qdrant_url: str | None = Field(None, description="Qdrant server URL (store=qdrant).")
    qdrant_api_key: str | None = Field(None, description="Qdrant API key (store=qdrant).")
    qdrant_location: str | None = Field(
        None, description="qdrant-client local mode instead of a server: ':memory:' or a path."
    )
    qdrant_timeout_s: float = Field(10.0, gt=0, description="Qdrant request timeout.")
    qdrant_shard_number: int | None = Field(None, ge=1, description="Shards per new collection.")
    qdrant_replication_factor: int | None = Field(None, ge=1, description="Replicas per shard.")
    qdrant_write_consistency_factor: int | None = Field(
        None, ge=1, description="Replicas that must acknowledge a write."
    )
    hnsw_m: int = Field(
        16,
        ge=4,
        le=128,
        description="Edge HNSW edges per node: more = better recall, a bigger index.",
    )
    hnsw_ef_construct: int = Field(
        100, ge=4, description="Edge HNSW candidates while building: more = a better graph, slower."
    )
    hnsw_ef: int | None = Field(
        None, ge=1, description="Edge HNSW candidates per search; none = the index's ef_construct."
    )
    index_threshold: int = Field(
        10_000,
        ge=0,
        description="After an ingestion (job or CLI), build the Edge HNSW index once a "
        "collection has this many chunks and none are indexed; 0 = only on request.",
    )
    reindex_fraction: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Past the threshold, rebuild an indexed collection's index once this share "
        "of its chunks is unindexed (each build copies the collection).",
    )

    # --- embeddings ----------------------------------------------------------------------
    embedder: Literal["onnx", "torch", "remote"] = Field(
        "onnx",
        description="onnx = fp32 MiniLM on onnxruntime's fused kernels in process (default, "
        "no torch); torch = fp32 sentence-transformers; remote = /v1/embeddings of a vLLM "
        "pooling worker.",
    )
    embedder_url: str = Field(
        "http://127.0.0.1:8101/v1", description="Base URL of the remote embedding worker."
    )
    embedder_model: str = Field(
        "all-MiniLM-L6-v2", description="Model name served by the remote embedding worker."
    )
    embed_batch_size: int = Field(
        8, ge=1, le=1024, description="Texts per model call (8 measured fastest for onnx here)."
    )
    embed_threads: int = Field(2, ge=1, description="Intra-op threads of in-process embedders.")
    embedder_timeout_s: float = Field(30.0, gt=0, description="Remote embedder timeout.")
    embedder_retries: int = Field(
        2, ge=0, le=10, description="Remote embedder retries (jittered backoff) on 5xx or refusal."
    )

    # --- generator (vLLM, OpenAI-compatible) ---------------------------------------------
    generator_urls: Annotated[list[str], NoDecode] = Field(
        ["http://127.0.0.1:8100/v1"],
        description="vLLM base URLs; round-robin, failing over on connection errors. "
        "Env: a JSON list or comma-separated.",
    )
    generator_model: str = Field("SmolLM2-135M-Instruct", description="Served model name.")
    generator_api_key: str | None = Field(None, description="Bearer key for the vLLM servers.")
    generator_timeout_s: float = Field(60.0, gt=0, description="Whole-request generator timeout.")
    generator_connect_timeout_s: float = Field(2.0, gt=0, description="Connect timeout per try.")
    generator_max_concurrency: int = Field(
        8, ge=1, description="Generator calls in flight per API process."
    )
    generator_max_queue: int = Field(
        64, ge=0, description="Generator calls waiting for a slot; more get 503 generator_busy."
    )
    generator_breaker_failures: int = Field(
        3, ge=1, description="Consecutive failures that open a replica's circuit breaker."
    )
    generator_breaker_cooldown_s: float = Field(
        10.0, gt=0, description="An open breaker lets one trial call through after this long."
    )
    max_tokens: int = Field(
        48, ge=1, le=4096, description="Answer token budget (a short answer needs few)."
    )
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature.")

    # --- collections and ingestion ------------------------------------------------------
    default_collection: str = Field("wiki", description="Collection used when none is named.")
    chunk_words: int = Field(160, ge=8, le=2000, description="Words per chunk window.")
    chunk_overlap: int = Field(32, ge=0, description="Words shared by consecutive windows.")
    upsert_batch_size: int = Field(256, ge=1, description="Points per store upsert.")
    max_documents_per_request: int = Field(1000, ge=1, description="Documents per POST.")
    max_document_chars: int = Field(1_000_000, ge=1, description="Characters per document.")
    max_files_per_request: int = Field(
        20, ge=1, description="Files per upload (POST /v1/collections/{name}/files)."
    )
    max_file_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1,
        description="Largest uploaded file; the whole upload stays under COVRAG_MAX_BODY_BYTES.",
    )

    # --- query ---------------------------------------------------------------------------
    default_top_k: int = Field(
        5, ge=1, le=100, description="Passages for an uncalibrated collection (plain top-k)."
    )
    max_chunks: int = Field(
        10, ge=1, le=100, description="Context budget in chunks behind the conformal threshold."
    )
    default_alpha: float = Field(
        0.1, gt=0, lt=1, description="Default miss rate stored with a new calibration."
    )
    stale_fraction: float = Field(
        0.1, gt=0, description="A calibration is stale after this fraction of chunks changed."
    )
    conformal_unreachable: Literal["budget", "error"] = Field(
        "budget",
        description="When no finite threshold attains 1-alpha: pass the budget unguaranteed, "
        "or refuse with 422.",
    )
    drift_window: int = Field(
        100,
        ge=10,
        le=10_000,
        description="Shift watch: live questions per block compared with the calibration set.",
    )
    drift_false_alarm: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="Shift watch: chance of any false alarm on traffic like the calibration set.",
    )
    max_question_chars: int = Field(4000, ge=1, description="Longest accepted question.")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body; larger gets 413."
    )
    max_context_chars: int = Field(
        6000,
        ge=200,
        description="Passage text per prompt; keeps it inside the model's 2,048 tokens.",
    )

    # --- Redis, answer cache, API keys, jobs ---------------------------------------------
    redis_url: str | None = Field(
        None, description="Redis for cache, rate limits and jobs; unset = in-process equivalents."
    )
    redis_password: str | None = Field(
        None,
        description="Put into COVRAG_REDIS_URL URL-escaped, so any character works (@, :, /).",
    )
    redis_prefix: str = Field("covrag:", description="Prefix of every Redis key covrag writes.")
    redis_timeout_s: float = Field(0.5, gt=0, description="Per-command Redis timeout.")
    answer_cache_ttl_s: int = Field(
        600, ge=0, description="Seconds a cached answer lives; 0 turns the answer cache off."
    )
    cache_max_entries: int = Field(
        10_000, ge=1, description="In-process caches (no Redis): answers and query embeddings."
    )
    api_keys: list[ApiKeySpec] = Field(
        [],
        description='API keys, a JSON list of {"name", "key" or "sha256", "collections", '
        '"rate_limit_per_minute", "rate_limit_burst"}; none (and no file) = open server.',
    )
    api_keys_file: Path | None = Field(
        None, description="A secret file with more keys (same JSON)."
    )
    rate_limit_on_error: Literal["open", "closed"] = Field(
        "open", description="Redis down: admit requests unchecked (open) or answer 503 (closed)."
    )
    job_lease_s: float = Field(
        30.0, gt=0, description="A job whose runner is silent this long is resumed elsewhere."
    )
    job_max_attempts: int = Field(3, ge=1, description="Interrupted runs before a job fails.")
    ready_timeout_s: float = Field(5.0, gt=0, description="Bound on each /readyz check.")
    require_calibration: bool = Field(
        False, description="/readyz fails unless the default collection has a fresh calibration."
    )
    ready_requires_workers: bool = Field(
        False,
        description="/readyz fails while the generator or the remote embedder is down (strict); "
        "by default it only reports them.",
    )

    # --- sufficiency critic and rounds (SIM-RAG) --------------------------------------
    critic: Literal["features", "cross-encoder", "llm-judge", "off"] = Field(
        "features",
        description="Who judges sufficiency (features: the packaged trained weights); off = "
        "single-round RAG.",
    )
    critic_weights: Path | None = Field(
        None, description="Weights of the features critic; default: the packaged file."
    )
    critic_worker_url: str = Field(
        "http://127.0.0.1:8102", description="The critic worker (critic=cross-encoder)."
    )
    critic_timeout_s: float = Field(10.0, gt=0, description="Critic worker / judge timeout.")
    critic_fallback: Literal["features", "error"] = Field(
        "features", description="Critic worker down: fall back to features (with a warning) or 503."
    )
    critic_tau: float | None = Field(
        None, ge=0, le=1, description="Accept threshold on P(sufficient); default: the critic's."
    )
    max_rounds: int = Field(3, ge=1, le=5, description="Retrieval rounds per question.")
    abstain_answer: str = Field(
        "I don't have enough evidence to answer that.", description="The answer when abstaining."
    )
    critic_cost_wrong_accept: float = Field(
        1.0, ge=0, description="Training: cost of accepting a wrong answer (picks tau)."
    )
    # A wrong answer still carries citations a reader can check; a needless refusal leaves
    # nothing, and a user refused what naive RAG would have answered goes back to naive RAG.
    # At 2 the cost-optimal τ refused too much of what naive RAG answers (docs/quality.md).
    critic_cost_false_reject: float = Field(
        3.0, ge=0, description="Training: cost of rejecting a right answer."
    )
    critic_cost_round: float = Field(0.1, ge=0, description="Training: cost of one more round.")
    critic_abstain_unanswerable: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Training: tau is raised until this share of the unanswerable training "
        "questions would be abstained on.",
    )

    # --- HTTP ----------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Bind address of `covrag serve`.")
    port: int = Field(8080, ge=1, le=65535, description="Port of `covrag serve`.")
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="On SIGTERM, in-flight requests get this long to finish."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of `covrag serve`."
    )
    log_format: Literal["json", "text"] = Field(
        "json",
        description="`covrag serve` logs: one JSON object per line (with the request id), or text.",
    )
    otel: bool = Field(
        False,
        description="FastAPI's OpenTelemetry spans, metrics and logs, to the process's providers. "
        "Off: /metrics and the JSON logs cover the same, and the per-request provider check "
        "costs ~5 % of a cached answer.",
    )

    # --- the CLI as a client -----------------------------------------------------------
    url: str = Field(
        "http://127.0.0.1:8080",
        description="The server `covrag ask`, `ingest`, `calibrate`, `index`, `collections` "
        "and `jobs` talk to (unless --local).",
    )
    api_key: str | None = Field(None, description="The API key those commands send.")

    # --- local vLLM worker (`covrag worker vllm`) ---------------------------------------
    vllm_python: Path = Field(
        Path(".venv-vllm/bin/python"), description="Python of the vLLM CPU virtualenv."
    )
    vllm_port: int = Field(8100, ge=1, le=65535, description="Port of the generator worker.")
    vllm_embed_port: int = Field(8101, ge=1, le=65535, description="Port of the embed worker.")
    vllm_start_timeout_s: float = Field(300.0, gt=0, description="Wait for /health this long.")

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        """Resolved once: a later ``chdir`` or a child process cannot move it."""
        return value.expanduser().resolve()

    @field_validator("generator_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        """Accept ``a,b`` as well as a JSON list, so a shell export stays readable."""
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [u.strip() for u in value.split(",") if u.strip()]
        return value

    @field_validator("generator_urls")
    @classmethod
    def _need_a_url(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one generator URL is required")
        return [u.rstrip("/") for u in value]

    @model_validator(mode="after")
    def _redis_password(self) -> Settings:
        """A password from a Secret cannot be escaped by Kubernetes' ``$(VAR)`` substitution:
        take it apart from the URL and escape it here."""
        if self.redis_password is not None and self.redis_url is not None:
            url = urlsplit(self.redis_url)
            user = quote(url.username, safe="") if url.username else ""
            host = url.netloc.rpartition("@")[2]
            netloc = f"{user}:{quote(self.redis_password, safe='')}@{host}"
            self.redis_url = urlunsplit(url._replace(netloc=netloc))
        return self

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment, built once per process (tests build their own)."""
    return Settings()
