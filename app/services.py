"""Wiring: settings → store, embedder, generator, retriever, pipeline, ingestor.

Used by the FastAPI lifespan and by the in-process CLI commands, so both run the same parts.
``Services`` hands them out; the pipeline only uses its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from redis.asyncio import Redis

from app.config import Settings
from app.core.pipeline import Pipeline
from app.core.reasoner import Reasoner
from app.core.types import PipelineLimits
from app.state.auth import Gate, KeyRing, MemoryRateLimiter, RateLimiter, RedisRateLimiter
from app.state.cache import AnswerCache, MemoryAnswers, RedisAnswers
from app.state.jobs import FileJobStore, JobStore, RedisJobStore
from app.state.redis_pipe import PipelinedRedis
from app.state.vector_cache import MemoryVectorCache, RedisVectorCache, VectorCache
from critic import Critic, make_critic
from llm import Generator, VLLMGenerator
from retrieval.drift import DriftWatches
from retrieval.embed import Embedder, make_embedder
from retrieval.ingest import Ingestor
from retrieval.retriever import Retriever
from retrieval.store import HnswParams, VectorStore, make_store


def build_store(settings: Settings) -> VectorStore:
    return make_store(
        settings.store,
        data_dir=settings.data_dir,
        url=settings.qdrant_url,
        location=settings.qdrant_location,
        api_key=settings.qdrant_api_key,
        timeout_s=settings.qdrant_timeout_s,
        shard_number=settings.qdrant_shard_number,
        replication_factor=settings.qdrant_replication_factor,
        write_consistency_factor=settings.qdrant_write_consistency_factor,
        hnsw=HnswParams(m=settings.hnsw_m, ef_construct=settings.hnsw_ef_construct),
        hnsw_ef=settings.hnsw_ef,
    )


def build_embedder(settings: Settings) -> Embedder:
    return make_embedder(
        settings.embedder,
        url=settings.embedder_url,
        model=settings.embedder_model,
        threads=settings.embed_threads,
        batch_size=settings.embed_batch_size,
        timeout_s=settings.embedder_timeout_s,
        retries=settings.embedder_retries,
    )


def build_ingestor(settings: Settings, store: VectorStore, embedder: Embedder) -> Ingestor:
    return Ingestor(
        store,
        embedder,
        chunk_words=settings.chunk_words,
        chunk_overlap=settings.chunk_overlap,
        max_document_chars=settings.max_document_chars,
    )


def build_critics(settings: Settings, generator: Generator) -> tuple[Critic | None, Critic | None]:
    """The configured critic and, for a remote one, the features critic to fall back on; the
    llm-judge asks ``generator``, sharing its breakers and admission limit.

    Raises ``CriticWeightsError`` for missing or corrupt weights: the server must not start.
    """
    if settings.critic == "off":
        return None, None
    build = partial(
        make_critic,
        weights_path=settings.critic_weights,
        worker_url=settings.critic_worker_url,
        generator=generator,
        timeout_s=settings.critic_timeout_s,
    )
    critic = build(settings.critic)
    remote = settings.critic != "features" and settings.critic_fallback == "features"
    return critic, build("features") if remote else None


def check_critic(settings: Settings) -> None:
    """Load the features weights the server would use, so ``covrag serve`` can refuse to start
    with one clear line instead of a lifespan traceback. Raises ``CriticWeightsError``."""
    if settings.critic == "features" or (
        settings.critic != "off" and settings.critic_fallback == "features"
    ):
        make_critic("features", weights_path=settings.critic_weights)


@dataclass
class Backends:
    """State that replicas share through Redis, or keep in process (and on disk, for jobs)
    when there is no Redis: one interface each, chosen here by ``COVRAG_REDIS_URL``."""

    answers: AnswerCache
    limiter: RateLimiter
    job_store: JobStore
    query_cache: VectorCache
    redis: Redis | None = None
    pipe: PipelinedRedis | None = None

    async def aclose(self) -> None:
        await self.query_cache.aclose()  # before its Redis connection
        if self.redis is not None:
            await self.redis.aclose()
        if self.pipe is not None:
            await self.pipe.aclose()


def build_backends(settings: Settings) -> Backends:
    if settings.redis_url is None:
        limiter = MemoryRateLimiter()
        return Backends(
            answers=AnswerCache(
                MemoryAnswers(limiter, settings.cache_max_entries), settings.answer_cache_ttl_s
            ),
            limiter=limiter,
            job_store=FileJobStore(settings.data_dir / "jobs"),
            query_cache=MemoryVectorCache(settings.cache_max_entries),
        )
    redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
    )
    pipe = PipelinedRedis.from_url(settings.redis_url, timeout_s=settings.redis_timeout_s)
    prefix = settings.redis_prefix
    return Backends(
        answers=AnswerCache(RedisAnswers(redis, pipe, prefix), settings.answer_cache_ttl_s),
        limiter=RedisRateLimiter(pipe, prefix),
        job_store=RedisJobStore(redis, prefix=prefix),
        query_cache=RedisVectorCache(pipe, prefix),
        redis=redis,
        pipe=pipe,
    )


async def invalidate_answers(settings: Settings, collection: str) -> None:
    """After a write outside the API (the CLI): servers sharing Redis must not serve answers
    cached before it. Without Redis each server's cache is its own and the CLI has none."""
    if settings.redis_url is not None:
        backends = build_backends(settings)
        try:
            await backends.answers.invalidate(collection)
        finally:
            await backends.aclose()


@dataclass
class Services:
    """The long-lived parts of one server (or CLI) process: whoever needs the store, the
    embedder, the generator or the retriever takes them from here."""

    store: VectorStore
    embedder: Embedder
    generator: Generator
    retriever: Retriever
    critics: tuple[Critic, ...]
    drift: DriftWatches
    pipeline: Pipeline
    ingestor: Ingestor
    backends: Backends
    gate: Gate

    async def aclose(self) -> None:
        await self.backends.aclose()
        await self.generator.aclose()
        for critic in self.critics:
            await critic.aclose()
        self.embedder.close()
        self.store.close()


def build_services(settings: Settings) -> Services:
    """Raises ``CriticWeightsError`` or ``ValueError`` (bad API keys) before building anything."""
    generator = VLLMGenerator(
        settings.generator_urls,
        model=settings.generator_model,
        api_key=settings.generator_api_key,
        timeout_s=settings.generator_timeout_s,
        connect_timeout_s=settings.generator_connect_timeout_s,
        max_concurrency=settings.generator_max_concurrency,
        max_queue=settings.generator_max_queue,
        breaker_failures=settings.generator_breaker_failures,
        breaker_cooldown_s=settings.generator_breaker_cooldown_s,
    )
    # Before anything that holds a connection (the generator opens none until its first call):
    # bad weights must stop start-up early.
    critic, fallback = build_critics(settings, generator)
    keys = KeyRing.load(settings.api_keys, settings.api_keys_file)
    backends = build_backends(settings)
    store = build_store(settings)
    embedder = build_embedder(settings)
    limits = PipelineLimits(
        max_question_chars=settings.max_question_chars,
        max_context_chars=settings.max_context_chars,
        default_top_k=settings.default_top_k,
        max_chunks=settings.max_chunks,
        max_rounds=settings.max_rounds,
        tau=settings.critic_tau,
        abstain_answer=settings.abstain_answer,
    )
    retriever = Retriever(
        store,
        embedder,
        stale_fraction=settings.stale_fraction,
        unreachable=settings.conformal_unreachable,
    )
    reasoner = Reasoner(generator, max_tokens=settings.max_tokens, temperature=settings.temperature)
    drift = DriftWatches(window=settings.drift_window, false_alarm=settings.drift_false_alarm)
    pipeline = Pipeline(
        retriever,
        reasoner,
        limits,
        critic=critic,
        fallback_critic=fallback,
        model=settings.generator_model,
        query_cache=backends.query_cache,
        drift=drift,
    )
    return Services(
        store=store,
        embedder=embedder,
        generator=generator,
        retriever=retriever,
        critics=tuple(c for c in (critic, fallback) if c is not None),
        drift=drift,
        pipeline=pipeline,
        ingestor=build_ingestor(settings, store, embedder),
        backends=backends,
        gate=Gate(keys, backends.limiter, settings.rate_limit_on_error),
    )
