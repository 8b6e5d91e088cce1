"""The answer prompt: numbered passages, answer only from them, cite by number, or refuse."""

from __future__ import annotations

import re
from collections.abc import Sequence

from retrieval.types import ScoredChunk

REFUSAL = "I cannot answer from the given passages."

SYSTEM = (
    "You answer questions using only the numbered passages you are given. "
    "Cite the passages you used by their numbers in square brackets, like [1]. "
    f"If the passages do not contain the answer, reply exactly: {REFUSAL}"
)

NO_EVIDENCE = "(no passages were found)"

_CITATION = re.compile(r"\[(\d{1,3})\]")


def answer_messages(question: str, passages: Sequence[ScoredChunk]) -> list[dict[str, str]]:
    """Chat messages asking for a cited answer from ``passages``, numbered from 1."""
    context = "\n".join(f"[{i}] {p.title}: {p.text}" for i, p in enumerate(passages, 1))
    user = f"Passages:\n{context or NO_EVIDENCE}\n\nQuestion: {question}\nAnswer:"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def cited_numbers(answer: str, n_passages: int) -> set[int]:
    """Passage numbers the answer cites (ignoring numbers that name no passage)."""
    return {int(m) for m in _CITATION.findall(answer) if 1 <= int(m) <= n_passages}


def is_refusal(answer: str) -> bool:
    """Whether the model said it cannot answer (it paraphrases, so match loosely)."""
    text = answer.lower()
    return not text.strip() or "cannot answer" in text or "can't answer" in text
