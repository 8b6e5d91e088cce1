"""A synthetic self-practice set for the critic tests, built from real Wikipedia summaries.

Stands in for ``covrag selfpractice`` output until real rows exist (never for shipped weights).
Each question is a cloze over one sentence of a real summary; its 1–2 rounds retrieve that
summary (or not) among other real summaries and answer with the blanked span (label 1) or with
a span of another passage, a refusal or nothing (label 0). Signals come from overlapping
distributions, so the label is learnable but no single feature gives it away.
"""

from __future__ import annotations

import random
import re
from typing import Any

from retrieval.types import Document

REFUSAL = "I cannot answer from the given passages."
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
#: A number, or a run of capitalized words that does not open the sentence.
_SPAN = re.compile(r"(?<=\s)(?:\d[\d,.]*\d|\d|[A-Z][a-z]+(?:\s+[A-Z][a-z]+){0,2})\b")


def _spans(sentence: str) -> list[str]:
    return [m.group(0) for m in _SPAN.finditer(sentence)]


def _cloze(doc: Document, rng: random.Random) -> tuple[str, str] | None:
    """(question, answer) from one sentence of ``doc``, or None when it has no usable span."""
    sentences = [s for s in _SENTENCE.split(doc.text) if 40 <= len(s) <= 240 and _spans(s)]
    if not sentences:
        return None
    sentence = rng.choice(sentences)
    answer = rng.choice(_spans(sentence))
    return f"Fill in the blank: {sentence.replace(answer, '___', 1)}", answer


def _passage(doc: Document, score: float) -> dict[str, Any]:
    return {
        "chunk_id": f"{doc.id}#0",
        "doc_id": doc.id,
        "title": doc.title or doc.id,
        "text": doc.text,
        "score": round(score, 4),
    }


def _reply(
    rng: random.Random, gold_in: bool, answer: str, passages: list[Document], others: list[Document]
) -> tuple[str, bool]:
    """(answer, right) of one round."""
    if gold_in and rng.random() < 0.75:
        return answer, True
    roll = rng.random()
    if roll < 0.55:  # a plausible span copied from the wrong passage
        spans = [s for p in passages for s in _spans(p.text) if s != answer] or ["Paris"]
        return rng.choice(spans), False
    if roll < 0.8:
        return REFUSAL, False
    if roll < 0.9:
        return "", False
    spans = [s for d in others for s in _spans(d.text)] or ["1900"]  # unsupported by any passage
    return rng.choice(spans), False


def practice_rows(docs: list[Document], n_questions: int, seed: int) -> list[dict[str, Any]]:
    """Rows in the format of ``covrag selfpractice`` for ``n_questions`` cloze questions."""
    rng = random.Random(seed)
    pool = sorted(docs, key=lambda d: d.id)
    rows: list[dict[str, Any]] = []
    while len({r["qid"] for r in rows}) < n_questions:
        gold = rng.choice(pool)
        cloze = _cloze(gold, rng)
        if cloze is None:
            continue
        question, answer = cloze
        qid = f"syn-{len({r['qid'] for r in rows}):04d}"
        found_at = rng.choice([0, 0, 1, 2])  # round at which retrieval reaches the gold summary
        for index in range(rng.choice([1, 2])):
            gold_in = index >= found_at
            distractors = rng.sample(pool, 5)
            passages = [d for d in distractors if d.id != gold.id][: rng.randint(1, 4)]
            if gold_in:
                passages.insert(rng.randint(0, len(passages)), gold)
            reply, right = _reply(rng, gold_in, answer, passages, rng.sample(pool, 2))
            top = min(max(rng.gauss(0.62 if gold_in else 0.5, 0.08), 0.05), 0.95)
            truncated = rng.random() < (0.05 if right else 0.2)
            logprob = min(rng.gauss(-0.35 if right else -0.7, 0.25), -0.01)
            rows.append(
                {
                    "qid": qid,
                    "type": "single",
                    "round": index,
                    "question": question,
                    "query": question if index == 0 else (gold.title or gold.id),
                    "passages": [_passage(d, top - 0.03 * i) for i, d in enumerate(passages)],
                    "answer": reply,
                    "signals": {
                        "top_similarity": round(top, 4),
                        "margin": round(top - 0.5, 4),
                        "passed": len(passages),
                        "none_cleared": top < 0.5,
                        "truncated": truncated,
                        "mean_logprob": round(logprob, 4),
                        "answer_tokens": 2 + len(reply.split()),
                        "round_index": index,
                    },
                    "label": int(right),
                    "match": "em" if right else "none",
                    "gold": [answer],
                }
            )
    return rows
