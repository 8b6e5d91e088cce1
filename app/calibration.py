"""Calibration runs: from user QA pairs, or from questions the generator writes (as CONFLARE).

Both end in ``retrieval.calibration.calibrate``, which scores, versions and persists.
"""

from __future__ import annotations

import asyncio
import json
import random
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


def usable(question: str, answer: str, passage: str) -> bool:
    """A generated pair is kept only if it is a real question whose answer the passage states."""
    q, a = question.strip(), normalize_answer(answer)
    return (
        len(q) >= 10
        and q.endswith("?")
        and bool(a)
        and a in normalize_answer(passage)
        and a not in normalize_answer(q)
    )


async def write_questions(
    store: VectorStore,
    generator: Generator,
    collection: str,
    n: int,
    *,
    seed: int,
    concurrency: int = 2,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[CalibrationItem], int]:
    """Sample ``n`` chunks (seeded), ask for one question each; returns (items, skipped)."""
    ids = await anyio.to_thread.run_sync(store.list_ids, collection)
    if not ids:
        raise CollectionEmpty(f"collection {collection!r} is empty: ingest documents first")
    sample = random.Random(seed).sample(ids, min(n, len(ids)))
    payloads = await anyio.to_thread.run_sync(store.get_payloads, collection, sample)
    gate = asyncio.Semaphore(concurrency)

    async def one(chunk_id: str) -> CalibrationItem | None:
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
            except (GeneratorError, ValueError):
                return None
            finally:
                if progress is not None:
                    progress(1)
        question, answer = str(reply.get("question", "")), str(reply.get("answer", ""))
        if not usable(question, answer, text):
            return None
        return CalibrationItem(
            id=f"gen-{chunk_id}",
            question=question.strip(),
            answers=(answer,),
            source_chunk_id=chunk_id,
        )

    results = await asyncio.gather(*(one(c) for c in sample))
    items = [r for r in results if r is not None]
    return items, len(sample) - len(items)


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
    progress: Callable[[int], None] | None = None,
) -> Calibration:
    """CONFLARE's way: questions written from random chunks, each chunk its own gold.

    The calibration's rules are checked before the LLM writes any question, and again on
    the questions it wrote (``retrieval.calibration.check_replacement``).
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
    items, skipped = await write_questions(
        store, generator, collection, n, seed=seed, progress=progress
    )
    return await anyio.to_thread.run_sync(
        lambda: calibrate(
            store,
            embedder,
            collection,
            items,
            source=f"generated:n={n},seed={seed}",
            default_alpha=default_alpha,
            skipped=skipped,
            replace_smaller=replace_smaller,
        )
    )


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

        calibration = await calibrate_generated(
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
        return calibration_summary(calibration)

    return run
