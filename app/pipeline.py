"""The query pipeline: embed → search → generate, with timings. No HTTP in here.

Routes turn a request into ``QueryParams``, call ``Pipeline.query`` and turn the
``QueryOutcome`` into a response; everything in between lives here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import anyio

from app.generator import Generator
from app.prompt import answer_messages, cited_numbers, is_refusal
from retrieval.embed.base import Embedder
from retrieval.errors import EmbedderMismatch
from retrieval.store.base import VectorStore
from retrieval.types import FilterValue, ScoredChunk


class InvalidQuery(ValueError):
    """A query the pipeline refuses; ``param`` names the offending field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class QueryParams:
    """One question, as the pipeline sees it."""

    question: str
    collection: str
    top_k: int
    filters: dict[str, FilterValue] = field(default_factory=dict)
    alpha: float | None = None
    max_rounds: int | None = None


@dataclass(frozen=True, slots=True)
class Citation:
    """A passage given to the generator; ``n`` is its number in the prompt."""

    n: int
    chunk: ScoredChunk
    cited: bool


@dataclass(frozen=True, slots=True)
class QueryOutcome:
    """Everything a response reports."""

    answer: str
    sufficient: bool
    citations: list[Citation]
    alpha: float | None
    threshold: float | None
    coverage_guaranteed: bool
    timings_ms: dict[str, float]
    model: str


@dataclass(frozen=True, slots=True)
class PipelineLimits:
    """Bounds from settings the pipeline enforces."""

    max_question_chars: int
    max_context_chars: int
    max_tokens: int
    temperature: float


class Pipeline:
    """Retrieval-augmented answering over one store, embedder and generator."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        generator: Generator,
        limits: PipelineLimits,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.generator = generator
        self._limits = limits

    def check(self, params: QueryParams) -> str:
        """The cleaned question; raises ``InvalidQuery`` for an empty or too long one."""
        question = params.question.strip()
        if not question:
            raise InvalidQuery("question must not be empty", "question")
        if len(question) > self._limits.max_question_chars:
            raise InvalidQuery(
                f"question is {len(question)} characters; the limit is "
                f"{self._limits.max_question_chars}",
                "question",
            )
        return question

    def retrieve(
        self, question: str, params: QueryParams, timings: dict[str, float]
    ) -> list[ScoredChunk]:
        """Embed and search (blocking: run it off the event loop)."""
        info = self.store.get_collection(params.collection)  # 404 before any model work
        if info.embedder != self.embedder.spec:
            raise EmbedderMismatch(
                f"collection {params.collection!r} was built with {info.embedder.model}; "
                f"this server embeds queries with {self.embedder.spec.model}"
            )
        start = time.perf_counter()
        vector = self.embedder.embed([question])[0]
        timings["embed"] = _ms(start)
        start = time.perf_counter()
        hits = self.store.search(
            params.collection, vector.tolist(), limit=params.top_k, filters=params.filters or None
        )
        timings["search"] = _ms(start)
        return hits

    async def query(self, params: QueryParams, request_id: str | None = None) -> QueryOutcome:
        """Answer ``params.question`` from the collection, citing the passages used."""
        start = time.perf_counter()
        question = self.check(params)
        timings: dict[str, float] = {}
        hits = await anyio.to_thread.run_sync(self.retrieve, question, params, timings)
        passages = self._fit_context(hits)
        gen_start = time.perf_counter()
        completion = await self.generator.complete(
            answer_messages(question, passages),
            max_tokens=self._limits.max_tokens,
            temperature=self._limits.temperature,
            request_id=request_id,
        )
        timings["generate"] = _ms(gen_start)
        timings["total"] = _ms(start)
        cited = cited_numbers(completion.text, len(passages))
        return QueryOutcome(
            answer=completion.text,
            sufficient=bool(passages) and not is_refusal(completion.text),
            citations=[Citation(n=i, chunk=p, cited=i in cited) for i, p in enumerate(passages, 1)],
            alpha=None,
            threshold=None,
            coverage_guaranteed=False,
            timings_ms=timings,
            model=completion.model,
        )

    def _fit_context(self, hits: list[ScoredChunk]) -> list[ScoredChunk]:
        """The best hits whose text fits the prompt budget (always at least the best one)."""
        kept: list[ScoredChunk] = []
        used = 0
        for hit in hits:
            used += len(hit.text) + len(hit.title) + 8
            if kept and used > self._limits.max_context_chars:
                break
            kept.append(hit)
        return kept


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
