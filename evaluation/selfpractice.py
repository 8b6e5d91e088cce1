"""Self-practice (SIM-RAG): run the loop with the critic off and label every round.

Each round of each training question becomes one row: (question, passages, answer, signals),
labelled 1 when the answer is right as ``covrag eval qa`` counts it (a gold alias within its
first words, a comparison's other candidate not named; ``match`` records how it matched), else
0. Unanswerable questions label every round 0: their
evidence never suffices. No human labels. Resumable: questions already in the output are skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.pipeline import Pipeline
from app.core.types import LoopPolicy, QueryParams, Round
from evaluation.scoring import match, others_compared, right_answer
from llm import GeneratorError
from retrieval.errors import RetrievalError

log = logging.getLogger("covrag.selfpractice")


@dataclass(frozen=True, slots=True)
class PracticeReport:
    questions: int
    skipped_done: int
    failed: int
    rows: int
    positives: int


def round_row(qa: dict[str, Any], r: Round) -> dict[str, Any]:
    """The training row of one round (the format ``train-critic`` reads)."""
    golds = [str(a) for a in qa.get("answers") or []]
    how = match(r.reasoning.answer, golds) if golds else "none"
    others = others_compared(qa) if qa.get("type") == "comparison" else []
    return {
        "qid": qa["id"],
        "type": qa.get("type", ""),
        "round": r.index,
        "question": qa["question"],
        "query": r.query,
        "passages": [
            {
                "chunk_id": c.id,
                "doc_id": c.doc_id,
                "title": c.title,
                "text": c.text,
                "score": c.score,
            }
            for c in r.context
        ],
        "answer": r.reasoning.answer,
        "signals": r.signals.to_json(),
        "label": int(bool(golds) and right_answer(r.reasoning.answer, golds, others)),
        "match": how,
        "gold": golds,
    }


def done_ids(out: Path) -> set[str]:
    if not out.exists():
        return set()
    return {json.loads(line)["qid"] for line in out.read_text().splitlines() if line.strip()}


async def practice(
    pipeline: Pipeline,
    questions: list[dict[str, Any]],
    out: Path,
    *,
    collection: str,
    rounds: int,
    concurrency: int = 2,
    progress: Callable[[int], object] | None = None,
) -> PracticeReport:
    """Run every question not yet in ``out`` for ``rounds`` rounds; append its rows."""
    done = done_ids(out)
    todo = [q for q in questions if q["id"] not in done]
    policy = LoopPolicy(max_rounds=rounds, critic=None, tau=1.0, always_continue=True)
    gate = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()
    counts = {"failed": 0, "rows": 0, "positives": 0}
    out.parent.mkdir(parents=True, exist_ok=True)

    async def one(qa: dict[str, Any]) -> None:
        async with gate:
            try:
                outcome = await pipeline.run(
                    QueryParams(question=qa["question"], collection=collection), policy
                )
            except (GeneratorError, RetrievalError) as exc:
                log.warning("question %s failed: %s", qa["id"], exc)
                counts["failed"] += 1
                return
            finally:
                if progress is not None:
                    progress(1)
        rows = [round_row(qa, r) for r in outcome.rounds]
        async with lock:  # one question's rows land together, so a resume never splits one
            with out.open("a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(row) + "\n" for row in rows))
        counts["rows"] += len(rows)
        counts["positives"] += sum(row["label"] for row in rows)

    await asyncio.gather(*(one(q) for q in todo))
    return PracticeReport(
        questions=len(todo),
        skipped_done=len(questions) - len(todo),
        failed=counts["failed"],
        rows=counts["rows"],
        positives=counts["positives"],
    )
