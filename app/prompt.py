"""Shared prompt vocabulary: the refusal the model is told to give, and citation parsing."""

from __future__ import annotations

import re

REFUSAL = "I cannot answer from the given passages."

NO_EVIDENCE = "(no passages were found)"

_CITATION = re.compile(r"\[(\d{1,3})\]")


def cited_numbers(text: str, n_passages: int) -> set[int]:
    """Passage numbers the text cites (ignoring numbers that name no passage)."""
    return {int(m) for m in _CITATION.findall(text) if 1 <= int(m) <= n_passages}


def is_refusal(answer: str) -> bool:
    """Whether the model said it cannot answer (it paraphrases, so match loosely)."""
    text = answer.lower()
    return not text.strip() or "cannot answer" in text or "can't answer" in text
