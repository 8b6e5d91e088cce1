"""The query pipeline: conformal retrieval → reasoner → critic, round after round (SIM-RAG).

No HTTP in here. Round 0 retrieves for the question through the conformal filter (for a
comparison, with each compared entity's best passage); the Reasoner answers from the context;
the Critic scores whether the evidence suffices. Below τ, while rounds remain, the next round
searches a document the context names by title, else the Reasoner's rewritten query, and the new
chunks join the context (deduped by chunk id); with nothing new to search the loop stops. If
the last round is still below τ, the pipeline abstains with the best candidate. Without a
critic the first answer stands: plain single-round RAG.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import anyio

from app.core.context import LATER_ROUND_CHUNKS, decide, extend_context, round_signals
from app.core.prompt import comparison, supporting
from app.core.reasoner import Reasoner, Reasoning, TokenUsage
from app.core.types import (
    AnswerText,
    Citation,
    EventSink,
    InvalidQuery,
    LoopPolicy,
    PipelineLimits,
    QueryFrom,
    QueryOutcome,
    QueryParams,
    Round,
)
from app.state.vector_cache import VectorCache, vector_key
from critic.base import Critic
from critic.errors import CriticUnavailable
from critic.features import is_refusal
from critic.types import CriticInput, Signals
from llm import TextSink
from retrieval.drift import DriftWatches
from retrieval.retriever import Retriever
from retrieval.types import Budget, Retrieval, ScoredChunk


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
        query_cache: VectorCache | None = None,
        drift: DriftWatches | None = None,
    ) -> None:
        self.retriever = retriever
        self.drift = drift
        self.query_cache = query_cache
        self.reasoner = reasoner
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

    async def _retrieve(self, query: str, params: QueryParams) -> Retrieval:
        """One retrieval, off the event loop; the question's vector from the cache if there.

        ``embed`` in its timings is the cache lookup plus, on a miss, the embedding.
        """
        if self.query_cache is None:
            return await anyio.to_thread.run_sync(self._retrieve_sync, query, params, None)
        start = time.perf_counter()
        key = vector_key(self.retriever.embedder.spec, query)
        vector = await self.query_cache.get(key)
        lookup = time.perf_counter() - start
        result = await anyio.to_thread.run_sync(self._retrieve_sync, query, params, vector)
        if vector is None:
            self.query_cache.put(key, result.vector)
        t = result.timings_ms
        t["embed"] = round(t.get("embed", 0.0) + lookup * 1000, 3)
        return result

    def _retrieve_sync(
        self, query: str, params: QueryParams, vector: list[float] | None
    ) -> Retrieval:
        # Read once a round: it sets both the default budget and the threshold.
        loaded = (
            self.retriever.calibration(params.collection) if params.conformal else (None, False)
        )
        default = self._limits.max_chunks if loaded[0] is not None else self._limits.default_top_k
        budget = Budget(chunks=params.top_k or default, chars=self._limits.max_context_chars)
        return self.retriever.retrieve(
            params.collection,
            query,
            alpha=params.alpha,
            budget=budget,
            filters=params.filters,
            conformal=params.conformal,
            loaded=loaded,
            vector=vector,
            group=params.group,
            search=params.search,
            rerank=params.rerank,
        )

    async def retrieve(self, params: QueryParams) -> Retrieval:
        """The conformal retrieval step alone (``/v1/retrieve``), off the event loop."""
        question = self._question(params)
        start = time.perf_counter()
        result = await self._retrieve(question, params)
        result.timings_ms["total"] = _ms(start)
        return replace(result, warnings=await self._watch(params, result))

    async def _watch(self, params: QueryParams, retrieval: Retrieval) -> tuple[str, ...]:
        """Feed the collection's shift watch with a question's first retrieval; a warning
        once it has flagged drift. Filtered searches are left out: their similarities are
        not the calibration set's kind."""
        ref = retrieval.calibration
        if (
            self.drift is None
            or ref is None
            or params.filters
            or retrieval.top_similarity is None
            or retrieval.multi_hop is None
        ):
            return ()
        watch = self.drift.current(params.collection, ref.version)
        if watch is None and not self.drift.knows(params.collection, ref.version):
            calibration, _ = await anyio.to_thread.run_sync(
                self.retriever.calibration, params.collection
            )
            if calibration is not None and calibration.version == ref.version:
                watch = self.drift.start(params.collection, calibration)
        if watch is None:
            return ()
        watch.observe(
            retrieval.top_similarity,
            retrieval.multi_hop,
            retrieval.threshold,
            retrieval.none_cleared,
            ref.scale,
        )
        status = watch.status()
        if not status.drifted:
            return ()
        return (
            f"drift: live questions on {params.collection!r} no longer look like its "
            f"calibration set ({status.signal} differs, flagged after {status.drifted_at} "
            "requests), so its coverage guarantee may not hold for them; recalibrate on "
            "questions like today's",
        )

    async def query(
        self,
        params: QueryParams,
        request_id: str | None = None,
        on_event: EventSink | None = None,
    ) -> QueryOutcome:
        """Answer with the server's policy: the critic decides, up to ``max_rounds`` rounds."""
        return await self.run(params, self.default_policy(params), request_id, on_event)

    async def run(
        self,
        params: QueryParams,
        policy: LoopPolicy,
        request_id: str | None = None,
        on_event: EventSink | None = None,
    ) -> QueryOutcome:
        """The loop itself, under an explicit policy (evaluation and self-practice use this).

        With ``on_event`` every round's answer streams as it is decoded, so a client sees text
        before the critic has judged it; the round event that follows says whether it stands.
        """
        start = time.perf_counter()
        question = self._question(params)
        self.reasoner.generator.fail_fast()  # a known-down generator: 503 now, not after retrieval
        rounds: list[Round] = []
        context: list[ScoredChunk] = []
        dropped: set[str] = set()
        tried: list[str] = []
        warnings: list[str] = []
        llm_calls = 0
        usage = TokenUsage()
        tau: float | None = None  # the last τ a round was held against
        if params.history:
            rewrite = await self.reasoner.standalone_question(params.history, question, request_id)
            question, usage, llm_calls = rewrite.query, rewrite.usage, 1
        query, search = question, (question, params)
        origin: QueryFrom = "question"
        pair = comparison(question)
        for index in range(policy.max_rounds):
            round_start = time.perf_counter()
            retrieval = await self._retrieve(*search)
            if index == 0:
                warnings.extend(await self._watch(params, retrieval))
            tried.append(query)
            hits = retrieval.hits
            if index == 0 and pair is not None:
                hits = [*await self._entity_hits(pair, params), *hits]
            added, evicted = extend_context(
                context, hits, index > 0, self._limits.max_context_chars, dropped
            )
            timings = dict(retrieval.timings_ms)
            if rounds and not (added or evicted) and self.reasoner.deterministic:
                # The same prompt as last round, decoded greedily: the same answer, no LLM call.
                reasoning = rounds[-1].reasoning
                if on_event is not None:
                    await on_event(AnswerText(index, reasoning.answer))
            else:
                t = time.perf_counter()
                reasoning = await self.reasoner.answer(
                    question, context, request_id, _answer_sink(on_event, index)
                )
                llm_calls += 1
                usage += reasoning.usage
                timings["reason"] = _ms(t)
            signals = round_signals(retrieval, context, reasoning, index)
            t = time.perf_counter()
            scored = await self._score(policy, question, context, reasoning, signals, warnings)
            timings["critic"] = _ms(t)
            last = index == policy.max_rounds - 1
            decision = decide(policy, scored, last, is_refusal(reasoning.answer))
            if scored is not None:
                tau = scored[1]
            rounds.append(
                Round(
                    index=index,
                    query=query,
                    query_from=origin,
                    retrieval=retrieval,
                    added=added,
                    evicted=evicted,
                    context=list(context),
                    reasoning=reasoning,
                    signals=signals,
                    critic_score=None if scored is None else scored[0],
                    decision=decision,
                    timings_ms={**timings, "round": _ms(round_start)},
                )
            )
            if on_event is not None:
                await on_event(rounds[-1])
            if decision in ("accept", "abstain") or last:
                break
            t = time.perf_counter()
            link = await self._next_link(rounds[0].retrieval.vector, context, tried, params)
            if link is not None:  # a document the passages name: searched with the question
                query, origin = link, "link"
                within = {**params.filters, "title": link}
                search = (
                    question,
                    replace(params, conformal=False, top_k=LATER_ROUND_CHUNKS, filters=within),
                )
            else:
                rewrite = await self.reasoner.next_query(
                    question, context, reasoning, tried, request_id
                )
                usage += rewrite.usage
                llm_calls += 1
                query, search, origin = rewrite.query, (rewrite.query, params), "model"
            rounds[-1].timings_ms["rewrite"] = _ms(t)
            if not query:  # nothing new to search: another round would find nothing
                if not policy.always_continue:
                    rounds[-1] = replace(rounds[-1], decision="abstain")
                break
        return self._outcome(rounds, start, llm_calls, usage, warnings, policy, tau)

    async def _next_link(
        self,
        vector: list[float],
        context: list[ScoredChunk],
        tried: list[str],
        params: QueryParams,
    ) -> str | None:
        """The title of the best document the context names that no round has searched."""
        found = await anyio.to_thread.run_sync(
            self.retriever.linked, params.collection, vector, context, params.filters
        )
        return next((h.title for h in found if h.title not in tried), None)

    async def _entity_hits(self, pair: tuple[str, str], params: QueryParams) -> list[ScoredChunk]:
        """The best passage for each of the two things a comparison names, searched apart
        (plain top-1: the question's own conformal search still runs, and its guarantee holds
        for the context these join)."""
        plain = replace(params, conformal=False, top_k=1)
        found = await asyncio.gather(*(self._retrieve(name, plain) for name in pair))
        return [hit for retrieval in found for hit in retrieval.hits[:1]]

    async def _score(
        self,
        policy: LoopPolicy,
        question: str,
        context: list[ScoredChunk],
        reasoning: Reasoning,
        signals: Signals,
        warnings: list[str],
    ) -> tuple[float, float] | None:
        """(P(sufficient), the τ to hold it against), or None without a critic."""
        if policy.critic is None:
            return None
        item = CriticInput(
            question=question,
            passages=[f"{c.title}: {c.text}" for c in context],
            answer=reasoning.answer,
            signals=signals,
        )
        critic = policy.critic
        try:
            score = await critic.score(item)
        except CriticUnavailable as exc:
            if self.fallback is None:
                raise
            warnings.append(f"critic {critic.name} unavailable ({exc}); used features")
            critic = self.fallback
            score = await critic.score(item)
        return score, policy.tau if policy.tau is not None else critic.tau

    def _outcome(
        self,
        rounds: list[Round],
        start: float,
        llm_calls: int,
        usage: TokenUsage,
        warnings: list[str],
        policy: LoopPolicy,
        tau: float | None,
    ) -> QueryOutcome:
        final = rounds[-1]
        abstained = final.decision == "abstain"
        scored = [r for r in rounds if r.critic_score is not None]
        candidate = max(scored, key=lambda r: r.critic_score or 0.0) if scored else final
        shown = candidate if abstained else final
        refused = is_refusal(shown.reasoning.answer)
        cited = (
            set()
            if refused
            else supporting(shown.reasoning.answer, [f"{c.title} {c.text}" for c in shown.context])
        )
        timings: dict[str, float] = {}
        for r in rounds:
            for key, value in r.timings_ms.items():
                timings[key] = round(timings.get(key, 0.0) + value, 3)
        timings["generate"] = round(timings.get("reason", 0.0) + timings.get("rewrite", 0.0), 3)
        timings["critic"] = timings.get("critic", 0.0)
        timings["total"] = _ms(start)
        return QueryOutcome(
            answer=self._limits.abstain_answer if abstained else final.reasoning.answer,
            sufficient=not abstained and bool(final.context) and not refused,
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
            usage=usage,
            warnings=warnings,
            critic=None if policy.critic is None else policy.critic.name,
            tau=tau,
        )


def _answer_sink(on_event: EventSink | None, index: int) -> TextSink | None:
    if on_event is None:
        return None

    async def sink(text: str) -> None:
        await on_event(AnswerText(index, text))

    return sink


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
