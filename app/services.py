"""Wiring: settings → store, embedder, generator, retriever, pipeline, ingestor.

Used by the FastAPI lifespan and by the in-process CLI commands, so both run the same parts.
``Services`` hands them out; the pipeline only uses its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from redis.asyncio import Redis

from app.config import (
    CollectionSettings,
    CriticSettings,
    EmbedderSettings,
    GeneratorSettings,
    Settings,
    StoreSettings,
)
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
from retrieval.errors import RerankerUnavailable
from retrieval.ingest import Ingestor
from retrieval.rerank import RemoteReranker, Reranking, load_reranker
from retrieval.retriever import Retriever
from retrieval.store import HnswParams, VectorStore, make_store


def build_store(store: StoreSettings) -> VectorStore:
    return make_store(
        store.kind,
        data_dir=store.data_dir,
        url=store.qdrant_url,
        location=store.qdrant_location,
        api_key=store.qdrant_api_key,
        timeout_s=store.qdrant_timeout_s,
        shard_number=store.qdrant_shard_number,
        replication_factor=store.qdrant_replication_factor,
        write_consistency_factor=store.qdrant_write_consistency_factor,
        hnsw=HnswParams(m=store.hnsw_m, ef_construct=store.hnsw_ef_construct),
        hnsw_ef=store.hnsw_ef,
    )


def build_embedder(embedder: EmbedderSettings) -> Embedder:
    return make_embedder(
        embedder.kind,
        url=embedder.url,
        model=embedder.model,
        threads=embedder.threads,
        batch_size=embedder.batch_size,
        timeout_s=embedder.timeout_s,
        retries=embedder.retries,
    )


def build_reranking(settings: Settings) -> Reranking | None:
    """The worker's reranker when ``COVRAG_RERANKER_URL`` names one, else the trained one in
    process, if ``covrag train-reranker`` wrote one (else reranked requests get 409 saying how
    to train it). A broken one is logged and left out: the reranker is optional, so the server
    still serves every other request."""
    reranker = settings.reranker
    if reranker.url is not None:
        remote = RemoteReranker(reranker.url, timeout_s=reranker.timeout_s)
        return Reranking(remote, reranker.candidates)
    try:
        found = load_reranker(
            reranker.model_dir(settings.store.models_dir), threads=reranker.threads
        )
    except RerankerUnavailable as exc:
        logging.getLogger("covrag").warning("%s; reranked requests get 409 until retrained", exc)
        return None
    return None if found is None else Reranking(found, reranker.candidates)


@contextmanager
def reranking_of(settings: Settings) -> Iterator[Reranking | None]:
    """``build_reranking`` for one command: the worker's connection is closed after it."""
    reranking = build_reranking(settings)
    try:
        yield reranking
    finally:
        if reranking is not None:
            reranking.reranker.close()


def build_ingestor(
    collections: CollectionSettings, store: VectorStore, embedder: Embedder
) -> Ingestor:
    return Ingestor(
        store,
        embedder,
        chunk_words=collections.chunk_words,
        chunk_overlap=collections.chunk_overlap,
        max_document_chars=collections.max_document_chars,
    )


def build_generator(generator: GeneratorSettings) -> VLLMGenerator:
    return VLLMGenerator(
        generator.urls,
        model=generator.model,
        api_key=generator.api_key,
        timeout_s=generator.timeout_s,
        connect_timeout_s=generator.connect_timeout_s,
        max_concurrency=generator.max_concurrency,
        max_queue=generator.max_queue,
        breaker_failures=generator.breaker_failures,
        breaker_cooldown_s=generator.breaker_cooldown_s,
    )


def build_critics(
    critic: CriticSettings, generator: Generator
) -> tuple[Critic | None, Critic | None]:
    """The configured critic and, for a remote one, the features critic to fall back on; the
    llm-judge asks ``generator``, sharing its breakers and admission limit.

    Raises ``CriticWeightsError`` for missing or corrupt weights: the server must not start.
    """
    if critic.kind == "off":
        return None, None
    build = partial(
        make_critic,
        weights_path=critic.weights,
        worker_url=critic.worker_url,
        generator=generator,
        timeout_s=critic.timeout_s,
    )
    remote = critic.kind != "features" and critic.fallback == "features"
    return build(critic.kind), build("features") if remote else None


def check_critic(critic: CriticSettings) -> None:
    """Load the features weights the server would use, so ``covrag serve`` can refuse to start
    with one clear line instead of a lifespan traceback. Raises ``CriticWeightsError``."""
    if critic.kind == "features" or (critic.kind != "off" and critic.fallback == "features"):
        make_critic("features", weights_path=critic.weights)


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
    if settings.redis.url is None:
        limiter = MemoryRateLimiter()
        return Backends(
            answers=AnswerCache(
                MemoryAnswers(limiter, settings.cache.max_entries), settings.cache.answer_ttl_s
            ),
            limiter=limiter,
            job_store=FileJobStore(settings.store.data_dir / "jobs"),
            query_cache=MemoryVectorCache(settings.cache.max_entries),
        )
    redis = Redis.from_url(
        settings.redis.url,
        socket_timeout=settings.redis.timeout_s,
        socket_connect_timeout=settings.redis.timeout_s,
    )
    pipe = PipelinedRedis.from_url(settings.redis.url, timeout_s=settings.redis.timeout_s)
    prefix = settings.redis.prefix
    return Backends(
        answers=AnswerCache(RedisAnswers(redis, pipe, prefix), settings.cache.answer_ttl_s),
        limiter=RedisRateLimiter(pipe, prefix),
        job_store=RedisJobStore(redis, prefix=prefix),
        query_cache=RedisVectorCache(pipe, prefix),
        redis=redis,
        pipe=pipe,
    )


async def invalidate_answers(settings: Settings, collection: str) -> None:
    """After a write outside the API (the CLI): servers sharing Redis must not serve answers
    cached before it. Without Redis each server's cache is its own and the CLI has none."""
    if settings.redis.url is not None:
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
        if self.retriever.reranking is not None:
            self.retriever.reranking.reranker.close()
        self.embedder.close()
        self.store.close()


def build_services(settings: Settings) -> Services:
    """Raises ``CriticWeightsError`` or ``ValueError`` (bad API keys) before building anything."""
    # The generator opens no connection until its first call; the critics come before anything
    # that does, so bad weights stop start-up early.
    generator = build_generator(settings.generator)
    critic, fallback = build_critics(settings.critic, generator)
    keys = KeyRing.load(settings.auth.api_keys, settings.auth.api_keys_file)
    backends = build_backends(settings)
    store = build_store(settings.store)
    embedder = build_embedder(settings.embedder)
    limits = PipelineLimits(
        max_question_chars=settings.limits.max_question_chars,
        max_context_chars=settings.limits.max_context_chars,
        default_top_k=settings.limits.default_top_k,
        max_chunks=settings.limits.max_chunks,
        max_rounds=settings.critic.max_rounds,
        tau=settings.critic.tau,
        abstain_answer=settings.critic.abstain_answer,
    )
    retriever = Retriever(
        store,
        embedder,
        stale_fraction=settings.calibration.stale_fraction,
        unreachable=settings.calibration.unreachable,
        multi_hop_links=settings.calibration.multi_hop_links,
        score=settings.calibration.score,
        keyword_hits=settings.limits.keyword_hits,
        reranking=build_reranking(settings),
    )
    reasoner = Reasoner(
        generator,
        max_tokens=settings.generator.max_tokens,
        temperature=settings.generator.temperature,
    )
    drift = DriftWatches(
        window=settings.calibration.drift_window,
        false_alarm=settings.calibration.drift_false_alarm,
    )
    pipeline = Pipeline(
        retriever,
        reasoner,
        limits,
        critic=critic,
        fallback_critic=fallback,
        model=settings.generator.model,
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
        ingestor=build_ingestor(settings.collections, store, embedder),
        backends=backends,
        gate=Gate(keys, backends.limiter, settings.auth.rate_limit_on_error),
    )
