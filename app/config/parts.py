"""Settings of the parts ``app.services`` builds: store, embedder, generator, critic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from app.config.group import Group


class StoreSettings(Group):
    """Where covrag keeps its data: the data dir, and the vector store (Edge in it, or Qdrant)."""

    data_dir: Path = Field(
        Path(".covrag"),
        validation_alias="COVRAG_DATA_DIR",
        description="Models, Edge shards, corpus cache, logs; a relative path is resolved once, "
        "against the directory covrag starts in.",
    )
    kind: Literal["edge", "qdrant"] = Field(
        "edge",
        validation_alias="COVRAG_STORE",
        description="edge = Qdrant Edge in process; qdrant = qdrant-client.",
    )
    qdrant_url: str | None = Field(
        None, validation_alias="COVRAG_QDRANT_URL", description="Qdrant server URL (store=qdrant)."
    )
    qdrant_api_key: str | None = Field(
        None,
        validation_alias="COVRAG_QDRANT_API_KEY",
        description="Qdrant API key (store=qdrant).",
    )
    qdrant_location: str | None = Field(
        None,
        validation_alias="COVRAG_QDRANT_LOCATION",
        description="qdrant-client local mode instead of a server: ':memory:' or a path.",
    )
    qdrant_timeout_s: float = Field(
        10.0,
        gt=0,
        validation_alias="COVRAG_QDRANT_TIMEOUT_S",
        description="Qdrant request timeout.",
    )
    qdrant_shard_number: int | None = Field(
        None,
        ge=1,
        validation_alias="COVRAG_QDRANT_SHARD_NUMBER",
        description="Shards per new collection.",
    )
    qdrant_replication_factor: int | None = Field(
        None,
        ge=1,
        validation_alias="COVRAG_QDRANT_REPLICATION_FACTOR",
        description="Replicas per shard.",
    )
    qdrant_write_consistency_factor: int | None = Field(
        None,
        ge=1,
        validation_alias="COVRAG_QDRANT_WRITE_CONSISTENCY_FACTOR",
        description="Replicas that must acknowledge a write.",
    )
    hnsw_m: int = Field(
        16,
        ge=4,
        le=128,
        validation_alias="COVRAG_HNSW_M",
        description="Edge HNSW edges per node: more = better recall, a bigger index.",
    )
    hnsw_ef_construct: int = Field(
        100,
        ge=4,
        validation_alias="COVRAG_HNSW_EF_CONSTRUCT",
        description="Edge HNSW candidates while building: more = a better graph, slower.",
    )
    hnsw_ef: int | None = Field(
        None,
        ge=1,
        validation_alias="COVRAG_HNSW_EF",
        description="Edge HNSW candidates per search; none = the index's ef_construct.",
    )
    index_threshold: int = Field(
        10_000,
        ge=0,
        validation_alias="COVRAG_INDEX_THRESHOLD",
        description="After an ingestion (job or CLI), build the Edge HNSW index once a "
        "collection has this many chunks and none are indexed; 0 = only on request.",
    )
    reindex_fraction: float = Field(
        0.1,
        gt=0,
        le=1,
        validation_alias="COVRAG_REINDEX_FRACTION",
        description="Past the threshold, rebuild an indexed collection's index once this share "
        "of its chunks is unindexed (each build copies the collection).",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        """Resolved once: a later ``chdir`` or a child process cannot move it."""
        return value.expanduser().resolve()

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"


class EmbedderSettings(Group):
    """The embedding model: in process, or a remote vLLM pooling worker."""

    kind: Literal["onnx", "torch", "remote"] = Field(
        "onnx",
        validation_alias="COVRAG_EMBEDDER",
        description="onnx = fp32 MiniLM on onnxruntime's fused kernels in process (default, "
        "no torch); torch = fp32 sentence-transformers; remote = /v1/embeddings of a vLLM "
        "pooling worker.",
    )
    url: str = Field(
        "http://127.0.0.1:8101/v1",
        validation_alias="COVRAG_EMBEDDER_URL",
        description="Base URL of the remote embedding worker.",
    )
    model: str = Field(
        "all-MiniLM-L6-v2",
        validation_alias="COVRAG_EMBEDDER_MODEL",
        description="Model name served by the remote embedding worker.",
    )
    batch_size: int = Field(
        8,
        ge=1,
        le=1024,
        validation_alias="COVRAG_EMBED_BATCH_SIZE",
        description="Texts per model call (8 measured fastest for onnx here).",
    )
    threads: int = Field(
        2,
        ge=1,
        validation_alias="COVRAG_EMBED_THREADS",
        description="Intra-op threads of in-process embedders.",
    )
    timeout_s: float = Field(
        30.0,
        gt=0,
        validation_alias="COVRAG_EMBEDDER_TIMEOUT_S",
        description="Remote embedder timeout.",
    )
    retries: int = Field(
        2,
        ge=0,
        le=10,
        validation_alias="COVRAG_EMBEDDER_RETRIES",
        description="Remote embedder retries (jittered backoff) on 5xx or refusal.",
    )


class RerankerSettings(Group):
    """The cross-encoder reranker (``retrieval.rerank``), trained by ``covrag rerank train``."""

    dir: Path | None = Field(
        None,
        validation_alias="COVRAG_RERANKER_DIR",
        description="The trained reranker; default <data dir>/models/reranker. None there: "
        "`rerank` requests answer 409.",
    )
    default: bool = Field(
        False,
        validation_alias="COVRAG_RERANK",
        description="Whether a request without `rerank` is reranked.",
    )
    candidates: int = Field(
        10,
        ge=1,
        le=100,
        validation_alias="COVRAG_RERANK_CANDIDATES",
        description="Dense hits reranked per round (a calibration keeps its own count, taken "
        "from this when it is made); compute grows with it.",
    )
    threads: int = Field(
        2,
        ge=1,
        validation_alias="COVRAG_RERANK_THREADS",
        description="Intra-op threads of the in-process reranker.",
    )
    url: str | None = Field(
        None,
        validation_alias="COVRAG_RERANKER_URL",
        description="A critic worker serving the reranker (`covrag worker critic --reranker`, "
        "on its GPU if it has one), e.g. http://127.0.0.1:8102; instead of the in-process one.",
    )
    timeout_s: float = Field(
        10.0,
        gt=0,
        validation_alias="COVRAG_RERANKER_TIMEOUT_S",
        description="Reranker worker timeout; past it a reranked request answers 503.",
    )

    def model_dir(self, models_dir: Path) -> Path:
        return self.dir or models_dir / "reranker"


class GeneratorSettings(Group):
    """The vLLM servers (OpenAI-compatible) that write answers, and what an answer may cost."""

    urls: Annotated[list[str], NoDecode] = Field(
        ["http://127.0.0.1:8100/v1"],
        validation_alias="COVRAG_GENERATOR_URLS",
        description="vLLM base URLs; round-robin, failing over on connection errors. "
        "Env: a JSON list or comma-separated.",
    )
    model: str = Field(
        "SmolLM2-135M-Instruct",
        validation_alias="COVRAG_GENERATOR_MODEL",
        description="Served model name.",
    )
    api_key: str | None = Field(
        None,
        validation_alias="COVRAG_GENERATOR_API_KEY",
        description="Bearer key for the vLLM servers.",
    )
    timeout_s: float = Field(
        60.0,
        gt=0,
        validation_alias="COVRAG_GENERATOR_TIMEOUT_S",
        description="Whole-request generator timeout.",
    )
    connect_timeout_s: float = Field(
        2.0,
        gt=0,
        validation_alias="COVRAG_GENERATOR_CONNECT_TIMEOUT_S",
        description="Connect timeout per try.",
    )
    max_concurrency: int = Field(
        8,
        ge=1,
        validation_alias="COVRAG_GENERATOR_MAX_CONCURRENCY",
        description="Generator calls in flight per API process.",
    )
    max_queue: int = Field(
        64,
        ge=0,
        validation_alias="COVRAG_GENERATOR_MAX_QUEUE",
        description="Generator calls waiting for a slot; more get 503 generator_busy.",
    )
    breaker_failures: int = Field(
        3,
        ge=1,
        validation_alias="COVRAG_GENERATOR_BREAKER_FAILURES",
        description="Consecutive failures that open a replica's circuit breaker.",
    )
    breaker_cooldown_s: float = Field(
        10.0,
        gt=0,
        validation_alias="COVRAG_GENERATOR_BREAKER_COOLDOWN_S",
        description="An open breaker lets one trial call through after this long.",
    )
    max_tokens: int = Field(
        48,
        ge=1,
        le=4096,
        validation_alias="COVRAG_MAX_TOKENS",
        description="Answer token budget (a short answer needs few).",
    )
    temperature: float = Field(
        0.0, ge=0, le=2, validation_alias="COVRAG_TEMPERATURE", description="Sampling temperature."
    )

    @field_validator("urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        """Accept ``a,b`` as well as a JSON list, so a shell export stays readable."""
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [u.strip() for u in value.split(",") if u.strip()]
        return value

    @field_validator("urls")
    @classmethod
    def _need_a_url(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one generator URL is required")
        return [u.rstrip("/") for u in value]


class CriticSettings(Group):
    """The sufficiency critic (SIM-RAG) and the retrieval rounds it decides on."""

    kind: Literal["features", "cross-encoder", "llm-judge", "off"] = Field(
        "features",
        validation_alias="COVRAG_CRITIC",
        description="Who judges sufficiency (features: the packaged trained weights); off = "
        "single-round RAG.",
    )
    weights: Path | None = Field(
        None,
        validation_alias="COVRAG_CRITIC_WEIGHTS",
        description="Weights of the features critic; default: the packaged file.",
    )
    worker_url: str = Field(
        "http://127.0.0.1:8102",
        validation_alias="COVRAG_CRITIC_WORKER_URL",
        description="The critic worker (critic=cross-encoder).",
    )
    timeout_s: float = Field(
        10.0,
        gt=0,
        validation_alias="COVRAG_CRITIC_TIMEOUT_S",
        description="Critic worker / judge timeout.",
    )
    fallback: Literal["features", "error"] = Field(
        "features",
        validation_alias="COVRAG_CRITIC_FALLBACK",
        description="Critic worker down: fall back to features (with a warning) or 503.",
    )
    tau: float | None = Field(
        None,
        ge=0,
        le=1,
        validation_alias="COVRAG_CRITIC_TAU",
        description="Accept threshold on P(sufficient); default: the critic's.",
    )
    max_rounds: int = Field(
        3,
        ge=1,
        le=5,
        validation_alias="COVRAG_MAX_ROUNDS",
        description="Retrieval rounds per question.",
    )
    abstain_answer: str = Field(
        "I don't have enough evidence to answer that.",
        validation_alias="COVRAG_ABSTAIN_ANSWER",
        description="The answer when abstaining.",
    )
    cost_wrong_accept: float = Field(
        1.0,
        ge=0,
        validation_alias="COVRAG_CRITIC_COST_WRONG_ACCEPT",
        description="Training: cost of accepting a wrong answer (picks tau).",
    )
    # A wrong answer still carries citations a reader can check; a needless refusal leaves
    # nothing, and a user refused what naive RAG would have answered goes back to naive RAG.
    # At 2 the cost-optimal τ refused too much of what naive RAG answers (docs/quality.md).
    cost_false_reject: float = Field(
        3.0,
        ge=0,
        validation_alias="COVRAG_CRITIC_COST_FALSE_REJECT",
        description="Training: cost of rejecting a right answer.",
    )
    cost_round: float = Field(
        0.1,
        ge=0,
        validation_alias="COVRAG_CRITIC_COST_ROUND",
        description="Training: cost of one more round.",
    )
    abstain_unanswerable: float = Field(
        0.9,
        ge=0,
        le=1,
        validation_alias="COVRAG_CRITIC_ABSTAIN_UNANSWERABLE",
        description="Training: tau is raised until this share of the unanswerable training "
        "questions would be abstained on.",
    )
