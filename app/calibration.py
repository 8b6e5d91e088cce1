"""Calibration runs: from user QA pairs, or from questions the generator writes (as CONFLARE).

Both end in ``retrieval.calibration.calibrate``, which scores, versions and persists.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio

from app.generator import Generator, GeneratorError
from app.jobs import Job, JobBody
from retrieval.calibration import (
    CalibrationItem,
    calibrate,
    check_calibration,
    normalize_answer,
)
from retrieval.conformal import Calibration, score_threshold
from retrieval.embed.base import Embedder
from retrieval.errors import CollectionEmpty
from retrieval.store.base import VectorStore

QUESTION_SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"],
}

_WRITE_QUESTION = (
    "Passage:\n{title}: {text}\n\n"
    "Write one question that this passage answers, and its short answer copied word for word "
    "from the passage. Reply as JSON with the keys question and answer."
)


class NoUsableQuestions(ValueError):
    """Every generated question was rejected; the message counts them by reason."""


def rejection(question: str, answer: str, passage: str) -> str | None:
    """Why a generated pair is unusable, or None: it must be a real question whose answer the
    passage states and the question does not give away."""
    q, a = question.strip(), normalize_answer(answer)
    if len(q) < 10 or not q.endswith("?"):
        return "not a question"
    if not a:
        return "no answer"
    if a not in normalize_answer(passage):
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
    """Sample ``n`` chunks (seeded), ask for one question each; returns the usable items and
    the rejected ones counted by reason (see ``rejection``; also ``generator error`` and
    ``reply not JSON``)."""
    ids = await anyio.to_thread.run_sync(store.list_ids, collection)
    if not ids:
        raise CollectionEmpty(f"collection {collection!r} is empty: ingest documents first")
    sample = random.Random(seed).sample(ids, min(n, len(ids)))
    payloads = await anyio.to_thread.run_sync(store.get_payloads, collection, sample)
    gate = asyncio.Semaphore(concurrency)

    async def one(chunk_id: str) -> CalibrationItem | str:
        payload = payloads[chunk_id]
        text, title = str(payload["text"]), str(payload.get("title") or "")
        async with gate:
            try:
                completion = await generator.complete(
                    [{"role": "user", "content": _WRITE_QUESTION.format(title=title, text=text)}],
                    max_tokens=96,
                    temperature=0.0,
                    json_schema=QUESTION_SCHEMA,
                )
                reply = json.loads(completion.text)
            except GeneratorError:
                return "generator error"
            except ValueError:
                return "reply not JSON"
            finally:
                if progress is not None:
                    progress(1)
        if not isinstance(reply, dict):
            return "reply not JSON"
        question, answer = str(reply.get("question", "")), str(reply.get("answer", ""))
        reason = rejection(question, answer, text)
        if reason is not None:
            return reason
        return CalibrationItem(
            id=f"gen-{chunk_id}",
            question=question.strip(),
            answers=(answer,),
            source_chunk_id=chunk_id,
        )

    results = await asyncio.gather(*(one(c) for c in sample))
    items = [r for r in results if isinstance(r, CalibrationItem)]
    return items, Counter(r for r in results if isinstance(r, str))


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
) -> tuple[Calibration, Counter[str]]:
    """CONFLARE's way: questions written from random chunks, each chunk its own gold; returns
    the calibration and the rejected questions counted by reason.

    The calibration's rules are checked before the LLM writes any question, and again on
    the questions it wrote (``retrieval.calibration.check_replacement``). Raises
    ``NoUsableQuestions`` (counting the rejections by reason) when none is usable.
    """
    await anyio.to_thread.run_sync(
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
            f"{rejections_text(rejected)}"
        )
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
        )
    )
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
        "thresholds": {
            str(a): score_threshold(calibration.qhat(a))
            for a in (0.05, 0.1, 0.2)
            if a >= calibration.min_alpha
        },
    }


def qa_job(
    store: VectorStore,
    embedder: Embedder,
    collection: str,
    items: list[CalibrationItem],
    *,
    default_alpha: float,
    replace_smaller: bool,
) -> JobBody:
    """A job body calibrating ``collection`` on user QA pairs."""

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
        )
        if rejected:
            job.messages.append(
                f"{rejected.total()} of {n} generated questions rejected: "
                f"{rejections_text(rejected)}"
            )
        return calibration_summary(calibration)

    return run
