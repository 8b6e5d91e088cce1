"""Calibration runs: from user QA pairs, or from questions the generator writes (as CONFLARE).

Both end in ``retrieval.calibration.calibrate``, which scores, versions and persists.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio

from app.state.jobs import Job, JobBody
from llm import Generator, GeneratorError
from retrieval.calibration import calibrate, check_calibration
from retrieval.calibration_set import CalibrationItem, normalize_answer
from retrieval.conformal import REPORTED_ALPHAS, Calibration, score_threshold
from retrieval.embed.base import Embedder
from retrieval.errors import CalibrationShrinks, DefaultAlphaUnsupported
from retrieval.rerank import Reranking
from retrieval.store.base import VectorStore

#: Answer first, then a question ending in its only "?": asked for a question only,
#: SmolLM2-135M echoed the instruction ("What is the answer to the question ") instead, on
#: every passage of a small collection; the answer written first gives the question a target.
QUESTION_SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "minLength": 1, "maxLength": 80},
        "question": {"type": "string", "pattern": r'[^"\\\n?]{8,150}\?'},
    },
    "required": ["answer", "question"],
}

_WRITE_QUESTION = (
    "Passage:\n{title}: {text}\n\nSentence: {sentence}\n\n"
    "Write one question that this sentence answers, and its short answer copied word for word "
    "from the sentence. Reply as JSON with the keys answer and question."
)

#: Worked examples, sent as earlier turns of the chat: the 135M model follows a shown reply
#: far better than a described one (counts: docs/conformal.md, generated calibration).
_EXAMPLES = (
    (
        "Eiffel Tower",
        "The Eiffel Tower is a wrought-iron tower in Paris. It was completed in 1889 as the "
        "entrance to the World's Fair.",
        "It was completed in 1889 as the entrance to the World's Fair.",
        {"answer": "1889", "question": "In which year was the Eiffel Tower completed?"},
    ),
    (
        "Parking",
        "Staff may park in the north car park. Each parking permit costs 30 euros per month and "
        "is valid for one vehicle.",
        "Each parking permit costs 30 euros per month and is valid for one vehicle.",
        {"answer": "30 euros", "question": "How much does a parking permit cost per month?"},
    ),
)

#: Sentences of a chunk tried in turn until one gives a usable question.
SENTENCES_TRIED = 3

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def _body(text: str) -> str:
    """The chunk on one line without its Markdown headings (the prompt gives the title), or
    all of it when that leaves nothing."""
    kept = " ".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return " ".join(kept.split()) or " ".join(text.split())


def sentences(text: str) -> list[str]:
    """The chunk's sentences worth a question; the whole body when none is."""
    body = _body(text)
    return [s for s in _SENTENCE_END.split(body) if len(s) >= 20] or [body]


def question_prompt(title: str, text: str, sentence: str) -> list[dict[str, str]]:
    """The chat asking for a question about ``sentence`` of the passage, after the examples."""
    messages = []
    for ex_title, ex_text, ex_sentence, reply in _EXAMPLES:
        ask = _WRITE_QUESTION.format(title=ex_title, text=ex_text, sentence=ex_sentence)
        messages += [
            {"role": "user", "content": ask},
            {"role": "assistant", "content": json.dumps(reply)},
        ]
    ask = _WRITE_QUESTION.format(title=title, text=_body(text), sentence=sentence)
    return [*messages, {"role": "user", "content": ask}]


class NoUsableQuestions(ValueError):
    """Every generated question was rejected; the message counts them by reason."""


def rejection(question: str, answer: str, passage: str) -> str | None:
    """Why a generated pair is unusable, or None: it must be a real question whose answer the
    passage states and the question does not give away. The answer may reorder the passage's
    words (the model writes "180 EUR" for "EUR 180"), not add any."""
    q, a = question.strip(), normalize_answer(answer)
    if len(q) < 10 or not q.endswith("?"):
        return "not a question"
    if not a:
        return "no answer"
    text = normalize_answer(passage)
    if a not in text and not set(a.split()) <= set(text.split()):
        return "answer not in the passage"
    if a in normalize_answer(q):
        return "answer given away by the question"
    return None


def rejections_text(rejected: Counter[str]) -> str:
    """``5 answer not in the passage, 2 not a question``: the commonest reason first."""
    return ", ".join(f"{n} {reason}" for reason, n in rejected.most_common())


async def write_questions(
    store: VectorStore,
    generator: Generator,
    collection: str,
    n: int,
    *,
    seed: int,
    concurrency: int = 2,
    progress: Callable[[int], object] | None = None,
) -> tuple[list[CalibrationItem], Counter[str]]:
    """Sample ``n`` chunks (seeded) and write one question each, about one sentence of it at a
    time (up to ``SENTENCES_TRIED``) until one is usable; returns the usable items and the
    chunks that gave none, counted by their last reason (see ``rejection``; also ``generator
    error`` and ``reply not JSON``). The caller checks the collection first
    (``check_calibration``; ``calibrate_generated`` does)."""
    ids = await anyio.to_thread.run_sync(store.list_ids, collection)
    sample = random.Random(seed).sample(ids, min(n, len(ids)))
    payloads = await anyio.to_thread.run_sync(store.get_payloads, collection, sample)
    gate = asyncio.Semaphore(concurrency)

    async def ask(title: str, text: str, sentence: str) -> dict[str, Any] | str:
        async with gate:
            try:
                completion = await generator.complete(
                    question_prompt(title, text, sentence),
                    max_tokens=96,
                    temperature=0.0,
                    json_schema=QUESTION_SCHEMA,
                )
                reply = json.loads(completion.text)
            except GeneratorError:
                return "generator error"
            except ValueError:
                return "reply not JSON"
        return reply if isinstance(reply, dict) else "reply not JSON"

    async def one(chunk_id: str) -> CalibrationItem | str:
        payload = payloads[chunk_id]
        text, title = str(payload["text"]), str(payload.get("title") or "")
        reason = "no answer"  # sentences() gives at least one, so always replaced
        try:
            for sentence in sentences(text)[:SENTENCES_TRIED]:
                reply = await ask(title, text, sentence)
                if isinstance(reply, str):
                    reason = reply
                    continue
                question, answer = str(reply.get("question", "")), str(reply.get("answer", ""))
                found = rejection(question, answer, text)
                if found is None:
                    return CalibrationItem(
                        id=f"gen-{chunk_id}",
                        question=question.strip(),
                        answers=(answer,),
                        source_chunk_id=chunk_id,
                    )
                reason = found
            return reason
        finally:
            if progress is not None:
                progress(1)

    results = await asyncio.gather(*(one(c) for c in sample))
    items = [r for r in results if isinstance(r, CalibrationItem)]
    return items, Counter(r for r in results if isinstance(r, str))


def _instead(asked: int, chunks: int) -> str:
    """What a user can do when generated questions fall short of a calibration."""
    more = (
        f"ask for more of its {chunks} chunks (generate up to {chunks})"
        if asked < chunks
        else f"ingest more documents (it has {chunks} chunks, one question each)"
    )
    return f"{more}, or calibrate from your own QA pairs (qa; CLI: --from-qa)"


async def calibrate_generated(
    store: VectorStore,
    embedder: Embedder,
    generator: Generator,
    collection: str,
    n: int,
    *,
    seed: int,
    default_alpha: float,
    replace_smaller: bool = False,
    progress: Callable[[int], object] | None = None,
    rerank: Reranking | None = None,
) -> tuple[Calibration, Counter[str]]:
    """CONFLARE's way: questions written from random chunks, each chunk its own gold; returns
    the calibration and the rejected questions counted by reason.

    The calibration's rules are checked before the LLM writes any question, and again on
    the questions it wrote (``retrieval.calibration.check_calibration``). Raises
    ``NoUsableQuestions`` (counting the rejections by reason) when none is usable, and the
    second check's refusal saying how many were when too few are.
    """
    target = await anyio.to_thread.run_sync(
        lambda: check_calibration(
            store,
            collection,
            n,
            default_alpha=default_alpha,
            replace_smaller=replace_smaller,
            sampled=True,
        )
    )
    items, rejected = await write_questions(
        store, generator, collection, n, seed=seed, progress=progress
    )
    if not items:
        raise NoUsableQuestions(
            f"none of the {rejected.total()} generated questions was usable: "
            f"{rejections_text(rejected)}; {_instead(n, target.info.chunks)}"
        )
    try:
        calibration = await anyio.to_thread.run_sync(
            lambda: calibrate(
                store,
                embedder,
                collection,
                items,
                source=f"generated:n={n},seed={seed}",
                default_alpha=default_alpha,
                skipped=rejected.total(),
                replace_smaller=replace_smaller,
                rerank=rerank,
            )
        )
    except (DefaultAlphaUnsupported, CalibrationShrinks) as exc:
        raise type(exc)(
            f"{len(items)} of {n} generated questions were usable "
            f"({rejections_text(rejected)} rejected): {exc}; or "
            f"{_instead(n, target.info.chunks)}"
        ) from exc
    return calibration, rejected


def calibration_summary(calibration: Calibration) -> dict[str, Any]:
    """What a calibration run reports (job result and CLI), with thresholds at common α."""
    return {
        "collection": calibration.collection,
        "n": calibration.n,
        "version": calibration.version,
        "misses": calibration.misses,
        "skipped": calibration.skipped,
        "source": calibration.source,
        "min_alpha": round(calibration.min_alpha, 5),
        "default_alpha": calibration.default_alpha,
        "thresholds": _thresholds(calibration),
        # on the reranker's relevance, when the server's reranker scored the questions too
        **(
            {"rerank_thresholds": _thresholds(calibration.reranked())}
            if calibration.rerank_version
            else {}
        ),
        # on a chunk's relative share (COVRAG_CONFORMAL_SCORE=relative)
        **(
            {"relative_thresholds": _thresholds(calibration.relative())}
            if calibration.relative_scale
            else {}
        ),
        # linked documents a possibly multi-hop question's context adds (None: no guarantee)
        "multi_hop_links": {str(a): calibration.link_quantile(a) for a in REPORTED_ALPHAS},
    }


def _thresholds(calibration: Calibration) -> dict[str, float | None]:
    """The thresholds at the common α and at the calibration's own default."""
    return {
        str(a): score_threshold(calibration.qhat(a))
        for a in sorted({*REPORTED_ALPHAS, calibration.default_alpha})
        if a >= calibration.min_alpha
    }


def qa_job(
    store: VectorStore,
    embedder: Embedder,
    collection: str,
    items: list[CalibrationItem],
    *,
    default_alpha: float,
    replace_smaller: bool,
    rerank: Reranking | None,
) -> JobBody:
    """A job body calibrating ``collection`` on user QA pairs (and, with ``rerank``, its
    reranker's scores of them)."""

    async def run(job: Job) -> dict[str, Any]:
        calibration = await anyio.to_thread.run_sync(
            lambda: calibrate(
                store,
                embedder,
                collection,
                items,
                source=f"qa:{len(items)}",
                default_alpha=default_alpha,
                replace_smaller=replace_smaller,
                rerank=rerank,
            )
        )
        return calibration_summary(calibration)

    return run


def generated_job(
    store: VectorStore,
    embedder: Embedder,
    generator: Generator,
    collection: str,
    n: int,
    *,
    seed: int,
    default_alpha: float,
    replace_smaller: bool,
    rerank: Reranking | None,
) -> JobBody:
    """A job body calibrating ``collection`` on ``n`` generated questions."""

    async def run(job: Job) -> dict[str, Any]:
        done = 0

        def advance(k: int) -> None:
            nonlocal done
            done += k
            job.progress = round(0.9 * done / n, 3)  # scoring takes the last part

        calibration, rejected = await calibrate_generated(
            store,
            embedder,
            generator,
            collection,
            n,
            seed=seed,
            default_alpha=default_alpha,
            replace_smaller=replace_smaller,
            progress=advance,
            rerank=rerank,
        )
        if rejected:
            job.messages.append(
                f"{rejected.total()} of {n} generated questions rejected: "
                f"{rejections_text(rejected)}"
            )
        return calibration_summary(calibration)

    return run
