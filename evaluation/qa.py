"""QA evaluation of every mode against naive RAG, side by side in one run (``covrag eval qa``).

- ``naive``: the reference a user would pick instead: plain top-3 retrieval, a plain prompt
  ("Answer the question using the context. Reply with a short answer only."), a plain-text
  reply of at most 48 tokens; no filter, no critic, never abstains.
- ``single``: covrag's reasoner on plain top-k retrieval (the calibration ignored), one round.
- ``conformal``: the conformal filter's context, one reasoner round.
- ``full``: conformal retrieval, the critic, up to ``max_rounds`` rounds, abstention.

A *right* answer (what every comparison counts, so verbosity cannot game it): a gold alias
(SQuAD-normalised) within the answer's first 12 words and, for a comparison, the other
compared entity not named there; EM, F1 and containment are reported beside it. For
unanswerable questions the right outcome is to abstain. Abstention precision = the share of a
mode's abstentions where naive RAG was not right (or the question has no answer). The
figures are read from the results by ``evaluation.qa_report``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from app.core.pipeline import Pipeline
from app.core.reasoner import TokenUsage, context_text
from app.core.types import InvalidQuery, LoopPolicy, QueryParams
from app.services import Services
from evaluation.scoring import contains, exact_match, f1, others_compared, right_answer
from llm import GeneratorError
from retrieval.hybrid import SearchMode
from retrieval.jsonl import question_of, read_jsonl

Mode = Literal["naive", "single", "conformal", "full"]
MODES: tuple[Mode, ...] = ("naive", "single", "conformal", "full")
#: The reference mode: paired tests and cost ratios are against it.
BASELINE: Mode = "naive"

NAIVE_SYSTEM = "Answer the question using the context. Reply with a short answer only."
NAIVE_TOP_K = 3
NAIVE_MAX_TOKENS = 48


@dataclass(frozen=True, slots=True)
class QaResult:
    """One question answered in one mode."""

    qid: str
    type: str
    mode: Mode
    answer: str
    answerable: bool
    abstained: bool
    #: Strictly right (see the module docstring); False when abstained.
    right: bool
    em: bool
    f1: float
    contains: bool
    #: How sure the mode is of ``candidate``: the critic's best score (full), else the answer
    #: call's mean token log-probability. Sweeping a threshold on it gives the risk–coverage
    #: curve.
    confidence: float
    #: The answer the mode would give if it did not abstain, and whether that one is right.
    candidate: str
    candidate_right: bool
    rounds: int
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    wall_ms: float
    critic_scores: list[float | None]
    #: The pipeline's own stage times, as ``/v1/query`` reports them.
    timings_ms: dict[str, float]


@dataclass(frozen=True, slots=True)
class Failure:
    """A question left out of the comparison: the pipeline refused it or the generator failed
    it in ``mode``."""

    qid: str
    mode: Mode
    error: str


@dataclass(frozen=True, slots=True)
class _Answered:
    """What one mode said for one question, before scoring."""

    answer: str
    abstained: bool
    candidate: str
    confidence: float
    rounds: int
    llm_calls: int
    usage: TokenUsage
    critic_scores: list[float | None]
    timings_ms: dict[str, float]


async def naive_answer(services: Services, question: str, collection: str) -> _Answered:
    """The naive baseline: plain top-3, a plain prompt, the reply as it comes."""
    params = QueryParams(
        question=question, collection=collection, top_k=NAIVE_TOP_K, conformal=False
    )
    retrieval = await services.pipeline.retrieve(params)
    user = f"Context:\n{context_text(retrieval.hits)}\n\nQuestion: {question}"
    start = time.perf_counter()
    completion = await services.generator.complete(
        [{"role": "system", "content": NAIVE_SYSTEM}, {"role": "user", "content": user}],
        max_tokens=NAIVE_MAX_TOKENS,
        temperature=0.0,
        logprobs=True,
    )
    timings = dict(retrieval.timings_ms)
    timings["reason"] = round((time.perf_counter() - start) * 1000, 3)
    timings["total"] = round(timings.get("total", 0.0) + timings["reason"], 3)
    return _Answered(
        answer=completion.text,
        abstained=False,
        candidate=completion.text,
        confidence=completion.mean_logprob or 0.0,
        rounds=1,
        llm_calls=1,
        usage=TokenUsage(completion.prompt_tokens, completion.completion_tokens),
        critic_scores=[None],
        timings_ms=timings,
    )


@dataclass(frozen=True, slots=True)
class SearchSetup:
    """How covrag's modes retrieve (naive RAG stays plain dense top-3, the baseline)."""

    search: SearchMode = "dense"
    rerank: bool = False


async def _pipeline_answer(
    pipeline: Pipeline, mode: Mode, question: str, collection: str, top_k: int, how: SearchSetup
) -> _Answered:
    params, policy = _setup(pipeline, mode, question, collection, top_k, how)
    outcome = await pipeline.run(params, policy)
    scores = [r.critic_score for r in outcome.rounds]
    known = [x for x in scores if x is not None]
    shown = outcome.candidate or outcome.rounds[-1]
    return _Answered(
        answer=outcome.answer,
        abstained=outcome.abstained,
        candidate=shown.reasoning.answer,
        confidence=max(known) if known else shown.reasoning.mean_logprob,
        rounds=len(outcome.rounds),
        llm_calls=outcome.llm_calls,
        usage=outcome.usage,
        critic_scores=scores,
        timings_ms=outcome.timings_ms,
    )


def _setup(
    pipeline: Pipeline, mode: Mode, question: str, collection: str, top_k: int, how: SearchSetup
) -> tuple[QueryParams, LoopPolicy]:
    if mode == "full":
        params = QueryParams(
            question=question, collection=collection, search=how.search, rerank=how.rerank
        )
        return params, pipeline.default_policy(params)
    params = QueryParams(
        question=question,
        collection=collection,
        top_k=top_k if mode == "single" else None,
        conformal=mode == "conformal",
        search=how.search,
        rerank=how.rerank,
    )
    return params, LoopPolicy(max_rounds=1, critic=None, tau=1.0)


async def run_modes(
    services: Services,
    questions: Sequence[dict[str, Any]],
    modes: Sequence[Mode],
    *,
    collection: str,
    top_k: int = 5,
    how: SearchSetup = SearchSetup(),
    concurrency: int = 2,
    progress: Callable[[int], object] | None = None,
) -> tuple[list[QaResult], list[Failure]]:
    """Every question in every mode (each question's modes back to back, for fair timing).

    A question the pipeline refuses (too long) or the generator fails (a timeout, a worker
    gone, a prompt over the model's context) fails that question, not an hour's run: it leaves
    every mode's results, so the modes are still compared on the same questions, and comes
    back as a ``Failure``.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(qa: dict[str, Any], mode: Mode) -> QaResult | Failure:
        try:
            async with gate:
                start = time.perf_counter()
                said = (
                    await naive_answer(services, qa["question"], collection)
                    if mode == "naive"
                    else await _pipeline_answer(
                        services.pipeline, mode, qa["question"], collection, top_k, how
                    )
                )
                wall = (time.perf_counter() - start) * 1000
        except (InvalidQuery, GeneratorError) as exc:
            return Failure(qa["id"], mode, f"{type(exc).__name__}: {exc}")
        finally:
            if progress is not None:
                progress(1)
        golds = [str(a) for a in qa.get("answers") or []]
        others = others_compared(qa) if qa.get("type") == "comparison" else []
        answered = bool(golds) and not said.abstained
        candidate_right = bool(golds) and right_answer(said.candidate, golds, others)
        return QaResult(
            qid=qa["id"],
            type=qa.get("type", ""),
            mode=mode,
            answer=said.answer,
            answerable=bool(golds),
            abstained=said.abstained,
            right=answered and candidate_right,
            em=answered and exact_match(said.answer, golds),
            f1=f1(said.answer, golds) if answered else 0.0,
            contains=answered and contains(said.answer, golds),
            confidence=said.confidence,
            candidate=said.candidate,
            candidate_right=candidate_right,
            rounds=said.rounds,
            llm_calls=said.llm_calls,
            prompt_tokens=said.usage.prompt,
            completion_tokens=said.usage.completion,
            wall_ms=round(wall, 1),
            critic_scores=said.critic_scores,
            timings_ms=said.timings_ms,
        )

    done = await asyncio.gather(*(one(qa, mode) for qa in questions for mode in modes))
    failures = [d for d in done if isinstance(d, Failure)]
    failed = {f.qid for f in failures}
    return [d for d in done if isinstance(d, QaResult) and d.qid not in failed], failures


def load_questions(
    paths: Sequence[Path], per_type: int | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """QA rows with an id and a question — at most ``per_type`` of each question type per file,
    in file order — and the malformed lines skipped."""

    def parse(row: dict[str, Any], _: int) -> dict[str, Any]:
        question_of(row)
        str(row["id"])
        return row

    kept: list[dict[str, Any]] = []
    errors: list[str] = []
    for path in paths:
        rows, bad = read_jsonl(path, parse)
        errors += bad
        seen: Counter[str] = Counter()
        for row in rows:
            seen[str(row.get("type", ""))] += 1
            if per_type is None or seen[str(row.get("type", ""))] <= per_type:
                kept.append(row)
    return kept, errors


def results_json(results: Sequence[QaResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
