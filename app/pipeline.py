"""The query pipeline: conformal retrieval → reasoner → critic, round after round (SIM-RAG).

No HTTP in here. Round 0 retrieves for the question through the conformal filter; the Reasoner
answers from the context; the Critic scores whether the evidence suffices. Below τ, while rounds
remain, the Reasoner writes a new search query and the new chunks join the context (deduped by
chunk id). If the last round is still below τ, the pipeline abstains with the best candidate.
Without a critic the first answer stands: plain single-round RAG.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import anyio

from app.prompt import cited_numbers, is_refusal
from app.reasoner import Reasoner, Reasoning
from critic.base import Critic
from critic.errors import CriticUnavailable
from critic.types import CriticInput, Signals
from retrieval.retriever import Budget, Retrieval, Retriever
from retrieval.types import FilterValue, ScoredChunk

Decision = Literal["accept", "search_again", "abstain", "continue"]


class InvalidQuery(ValueError):
    """A query the pipeline refuses; ``param`` names the offending field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class QueryParams:
    """One question, as the pipeline sees it. ``None`` fields take the defaults."""

    question: str
    collection: str
    top_k: int | None = None
    filters: dict[str, FilterValue] = field(default_factory=dict)
    alpha: float | None = None
    max_rounds: int | None = None
    conformal: bool = True


@dataclass(frozen=True, slots=True)
class LoopPolicy:
    """How many rounds, who judges them, and when to stop.

    ``critic=None`` accepts the first answer (single-round RAG). ``always_continue`` runs every
    round whatever the critic says (self-practice records each round's outcome).
    """

    max_rounds: int
    critic: Critic | None
    tau: float
    always_continue: bool = False


@dataclass(frozen=True, slots=True)
class Citation:
    """A passage given to the generator; ``n`` is its number in the prompt."""

    n: int
    chunk: ScoredChunk
    cited: bool


@dataclass(frozen=True, slots=True)
class Round:
    """One retrieval round: what was searched, what it added, what the critic said."""

    index: int
    query: str
    retrieval: Retrieval
    added: list[str]
    context: list[ScoredChunk]
    reasoning: Reasoning
    signals: Signals
    critic_score: float | None
    decision: Decision
    timings_ms: dict[str, float]


@dataclass(frozen=True, slots=True)
class QueryOutcome:
    """Everything a query response reports."""

    answer: str
    sufficient: bool
    abstained: bool
    citations: list[Citation]
    retrieval: Retrieval
    rounds: list[Round]
    candidate: Round | None
    timings_ms: dict[str, float]
    model: str
    llm_calls: int
    warnings: list[str]


@dataclass(frozen=True, slots=True)
class PipelineLimits:
    """Bounds and defaults from settings the pipeline enforces."""

    max_question_chars: int
    max_context_chars: int
    default_top_k: int
    max_chunks: int
    max_rounds: int
    tau: float
    abstain_answer: str


class Pipeline:
    """Retrieval-augmented answering with a sufficiency critic."""

    def __init__(
        self,
        retriever: Retriever,
        reasoner: Reasoner,
        limits: PipelineLimits,
        *,
        critic: Critic | None = None,
        fallback_critic: Critic | None = None,
        model: str = "",
    ) -> None:
        self.retriever = retriever
        self.store = retriever.store
        self.embedder = retriever.embedder
        self.reasoner = reasoner
        self.generator = reasoner.generator
        self.critic = critic
        self.fallback = fallback_critic
        self._limits = limits
        self.model = model

    def default_policy(self, params: QueryParams) -> LoopPolicy:
        return LoopPolicy(
            max_rounds=params.max_rounds or self._limits.max_rounds,
            critic=self.critic,
            tau=self._limits.tau,
        )

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

    def _retrieve_sync(self, query: str, params: QueryParams) -> Retrieval:
        calibrated = (
            params.conformal and self.retriever.calibration(params.collection)[0] is not None
        )
        default = self._limits.max_chunks if calibrated else self._limits.default_top_k
        budget = Budget(chunks=params.top_k or default, chars=self._limits.max_context_chars)
        return self.retriever.retrieve(
            params.collection,
            query,
            alpha=params.alpha,
            budget=budget,
            filters=params.filters,
            conformal=params.conformal,
        )

    async def retrieve(self, params: QueryParams) -> Retrieval:
        """The conformal retrieval step alone (``/v1/retrieve``), off the event loop."""
        question = self._question(params)
        start = time.perf_counter()
        result = await anyio.to_thread.run_sync(self._retrieve_sync, question, params)
        result.timings_ms["total"] = _ms(start)
        return result

    async def query(self, params: QueryParams, request_id: str | None = None) -> QueryOutcome:
        """Answer with the server's policy: the critic decides, up to ``max_rounds`` rounds."""
        return await self.run(params, self.default_policy(params), request_id)

    async def run(
        self, params: QueryParams, policy: LoopPolicy, request_id: str | None = None
    ) -> QueryOutcome:
        """The loop itself, under an explicit policy (evaluation and self-practice use this)."""
        start = time.perf_counter()
        question = self._question(params)
        rounds: list[Round] = []
        context: list[ScoredChunk] = []
        tried: list[str] = []
        warnings: list[str] = []
        llm_calls = 0
        query = question
        for index in range(policy.max_rounds):
            round_start = time.perf_counter()
            retrieval = await anyio.to_thread.run_sync(self._retrieve_sync, query, params)
            tried.append(query)
            added = self._extend(context, retrieval.hits)
            t = time.perf_counter()
            reasoning = await self.reasoner.answer(question, context, request_id)
            llm_calls += 1
            timings = {**retrieval.timings_ms, "reason": _ms(t)}
            signals = _signals(retrieval, context, reasoning, index)
            t = time.perf_counter()
            score = await self._score(policy, question, context, reasoning, signals, warnings)
            timings["critic"] = _ms(t)
            last = index == policy.max_rounds - 1
            decision = _decide(policy, score, last)
            rounds.append(
                Round(
                    index=index,
                    query=query,
                    retrieval=retrieval,
                    added=added,
                    context=list(context),
                    reasoning=reasoning,
                    signals=signals,
                    critic_score=score,
                    decision=decision,
                    timings_ms={**timings, "round": _ms(round_start)},
                )
            )
            if decision in ("accept", "abstain") or last:
                break
            t = time.perf_counter()
            query = await self.reasoner.next_query(question, context, tried, request_id)
            llm_calls += 1
            rounds[-1].timings_ms["rewrite"] = _ms(t)
        return self._outcome(rounds, start, llm_calls, warnings)

    def _extend(self, context: list[ScoredChunk], hits: list[ScoredChunk]) -> list[str]:
        """Add unseen chunks while the prompt budget allows; returns the ids added."""
        seen = {c.id for c in context}
        used = sum(len(c.text) + len(c.title) + 8 for c in context)
        added: list[str] = []
        for hit in hits:
            cost = len(hit.text) + len(hit.title) + 8
            if hit.id in seen or (context and used + cost > self._limits.max_context_chars):
                continue
            context.append(hit)
            seen.add(hit.id)
            added.append(hit.id)
            used += cost
        return added

    async def _score(
        self,
        policy: LoopPolicy,
        question: str,
        context: list[ScoredChunk],
        reasoning: Reasoning,
        signals: Signals,
        warnings: list[str],
    ) -> float | None:
        if policy.critic is None:
            return None
        item = CriticInput(
            question=question,
            passages=[f"{c.title}: {c.text}" for c in context],
            answer=reasoning.answer,
            rationale=reasoning.rationale,
            signals=signals,
        )
        try:
            return await policy.critic.score(item)
        except CriticUnavailable as exc:
            if self.fallback is None:
                raise
            warnings.append(f"critic {policy.critic.name} unavailable ({exc}); used features")
            return await self.fallback.score(item)

    def _outcome(
        self, rounds: list[Round], start: float, llm_calls: int, warnings: list[str]
    ) -> QueryOutcome:
        final = rounds[-1]
        abstained = final.decision == "abstain"
        scored = [r for r in rounds if r.critic_score is not None]
        candidate = max(scored, key=lambda r: r.critic_score or 0.0) if scored else final
        shown = candidate if abstained else final
        text = f"{shown.reasoning.answer} {shown.reasoning.rationale}"
        cited = cited_numbers(text, len(shown.context))
        timings: dict[str, float] = {}
        for r in rounds:
            for key, value in r.timings_ms.items():
                timings[key] = round(timings.get(key, 0.0) + value, 3)
        timings["generate"] = round(timings.get("reason", 0.0) + timings.get("rewrite", 0.0), 3)
        timings["critic"] = timings.get("critic", 0.0)
        timings["total"] = _ms(start)
        return QueryOutcome(
            answer=self._limits.abstain_answer if abstained else final.reasoning.answer,
            sufficient=not abstained
            and bool(final.context)
            and not is_refusal(final.reasoning.answer),
            abstained=abstained,
            citations=[
                Citation(n=i, chunk=c, cited=i in cited) for i, c in enumerate(shown.context, 1)
            ],
            retrieval=rounds[0].retrieval,
            rounds=rounds,
            candidate=candidate if abstained else None,
            timings_ms=timings,
            model=self.model,
            llm_calls=llm_calls,
            warnings=warnings,
        )


def _signals(
    retrieval: Retrieval, context: list[ScoredChunk], reasoning: Reasoning, index: int
) -> Signals:
    top = max((c.score for c in context), default=0.0)
    return Signals(
        top_similarity=top,
        margin=top - retrieval.threshold if retrieval.threshold is not None and context else 0.0,
        passed=len(context),
        none_cleared=retrieval.none_cleared,
        unsure=reasoning.unsure,
        mean_logprob=reasoning.mean_logprob,
        answer_tokens=reasoning.tokens,
        round_index=index,
    )


def _decide(policy: LoopPolicy, score: float | None, last: bool) -> Decision:
    if score is None:
        return "continue" if policy.always_continue and not last else "accept"
    if policy.always_continue:
        return "continue"
    if score >= policy.tau:
        return "accept"
    return "abstain" if last else "search_again"


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
