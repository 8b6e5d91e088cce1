"""The query pipeline: conformal retrieval → generation, with timings. No HTTP in here.

Routes turn a request into ``QueryParams``, call ``Pipeline.query`` (or ``retrieve``) and turn
the result into a response; everything in between lives here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import anyio

from app.generator import Generator
from app.prompt import answer_messages, cited_numbers, is_refusal
from retrieval.retriever import Budget, Retrieval, Retriever
from retrieval.types import FilterValue, ScoredChunk


class InvalidQuery(ValueError):
    """A query the pipeline refuses; ``param`` names the offending field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class QueryParams:
    """One question, as the pipeline sees it. ``top_k`` None = the default budget."""

    question: str
    collection: str
    top_k: int | None = None
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
    """Everything a query response reports."""

    answer: str
    sufficient: bool
    citations: list[Citation]
    retrieval: Retrieval
    timings_ms: dict[str, float]
    model: str


@dataclass(frozen=True, slots=True)
class PipelineLimits:
    """Bounds from settings the pipeline enforces."""

    max_question_chars: int
    max_context_chars: int
    default_top_k: int
    max_chunks: int
    max_tokens: int
    temperature: float


class Pipeline:
    """Retrieval-augmented answering over one retriever and generator."""

    def __init__(self, retriever: Retriever, generator: Generator, limits: PipelineLimits) -> None:
        self.retriever = retriever
        self.store = retriever.store
        self.embedder = retriever.embedder
        self.generator = generator
        self._limits = limits

    def _question(self, params: QueryParams) -> str:
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

    def _retrieve_sync(self, question: str, params: QueryParams) -> Retrieval:
        calibrated = self.retriever.calibration(params.collection)[0] is not None
        default = self._limits.max_chunks if calibrated else self._limits.default_top_k
        budget = Budget(chunks=params.top_k or default, chars=self._limits.max_context_chars)
        return self.retriever.retrieve(
            params.collection, question, alpha=params.alpha, budget=budget, filters=params.filters
        )

    async def retrieve(self, params: QueryParams) -> Retrieval:
        """The conformal retrieval step alone (``/v1/retrieve``), off the event loop."""
        question = self._question(params)
        start = time.perf_counter()
        result = await anyio.to_thread.run_sync(self._retrieve_sync, question, params)
        result.timings_ms["total"] = _ms(start)
        return result

    async def query(self, params: QueryParams, request_id: str | None = None) -> QueryOutcome:
        """Answer ``params.question`` from the collection, citing the passages used."""
        start = time.perf_counter()
        question = self._question(params)
        retrieval = await anyio.to_thread.run_sync(self._retrieve_sync, question, params)
        passages = retrieval.hits
        gen_start = time.perf_counter()
        completion = await self.generator.complete(
            answer_messages(question, passages),
            max_tokens=self._limits.max_tokens,
            temperature=self._limits.temperature,
            request_id=request_id,
        )
        timings = dict(retrieval.timings_ms)
        timings["generate"] = _ms(gen_start)
        timings["total"] = _ms(start)
        cited = cited_numbers(completion.text, len(passages))
        return QueryOutcome(
            answer=completion.text,
            sufficient=bool(passages) and not is_refusal(completion.text),
            citations=[Citation(n=i, chunk=p, cited=i in cited) for i, p in enumerate(passages, 1)],
            retrieval=retrieval,
            timings_ms=timings,
            model=completion.model,
        )


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
