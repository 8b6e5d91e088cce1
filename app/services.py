"""Wiring: settings → store, embedder, generator, pipeline, ingestor.

Used by the FastAPI lifespan and by the in-process CLI commands, so both run the same parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.config import Settings
from app.generator import VLLMGenerator
from app.pipeline import Pipeline, PipelineLimits
from retrieval.embed import Embedder, make_embedder
from retrieval.ingest import Ingestor
from retrieval.retriever import Retriever
from retrieval.store import VectorStore, make_store


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
    )


def build_embedder(settings: Settings) -> Embedder:
    return make_embedder(
        settings.embedder,
        url=settings.embedder_url,
        model=settings.embedder_model,
        threads=settings.embed_threads,
        batch_size=settings.embed_batch_size,
        timeout_s=settings.embedder_timeout_s,
    )


def build_ingestor(settings: Settings, store: VectorStore, embedder: Embedder) -> Ingestor:
    return Ingestor(
        store, embedder, chunk_words=settings.chunk_words, chunk_overlap=settings.chunk_overlap
    )


@dataclass
class Services:
    """The long-lived parts of one server (or CLI) process."""

    pipeline: Pipeline
    ingestor: Ingestor

    async def aclose(self) -> None:
        await self.pipeline.generator.aclose()
        self.pipeline.embedder.close()
        self.pipeline.store.close()


def build_services(settings: Settings) -> Services:
    store = build_store(settings)
    embedder = build_embedder(settings)
    generator = VLLMGenerator(
        settings.generator_urls,
        model=settings.generator_model,
        api_key=settings.generator_api_key,
        timeout_s=settings.generator_timeout_s,
        connect_timeout_s=settings.generator_connect_timeout_s,
    )
    limits = PipelineLimits(
        max_question_chars=settings.max_question_chars,
        max_context_chars=settings.max_context_chars,
        default_top_k=settings.default_top_k,
        max_chunks=settings.max_chunks,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
    )
    retriever = Retriever(
        store,
        embedder,
        stale_fraction=settings.stale_fraction,
        unreachable=settings.conformal_unreachable,
    )
    return Services(
        pipeline=Pipeline(retriever, generator, limits),
        ingestor=build_ingestor(settings, store, embedder),
    )
