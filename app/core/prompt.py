"""Shared prompt vocabulary: the empty context, the question's shape, and which passages an
answer rests on."""

from __future__ import annotations

import re
from collections.abc import Sequence

from retrieval.calibration_set import normalize_answer

NO_EVIDENCE = "(no passages were found)"

#: "Which …, X or Y?": the last comma (or colon) before "X or Y" ends the question's stem.
_COMPARISON = re.compile(r"[,:]\s*(?P<a>[^,:]+?)\s+or\s+(?P<b>[^,:]+?)\s*\?\s*$")
#: Share of an answer's words a passage must hold to count as its source, when none holds the
#: answer as a phrase (the model may reorder or shorten what it copies).
_SUPPORT_WORDS = 0.6


def comparison(question: str) -> tuple[str, str] | None:
    """The two things a "Which …, X or Y?" question compares, or None for another question."""
    found = _COMPARISON.search(question)
    if found is None:
        return None
    a, b = (found.group(k).strip() for k in ("a", "b"))
    if not a or not b or normalize_answer(a) == normalize_answer(b):
        return None
    return a, b


def supporting(answer: str, passages: Sequence[str]) -> set[int]:
    """The 1-based numbers of the passages the answer was taken from.

    A passage holding the whole answer (normalized, as a phrase) is a source; when none does,
    the passage holding the largest share of the answer's words, if that share is at least
    ``_SUPPORT_WORDS``. A refusal or an empty answer rests on nothing.
    """
    norm = normalize_answer(answer)
    if not norm:
        return set()
    texts = [f" {normalize_answer(p)} " for p in passages]
    whole = {i for i, t in enumerate(texts, 1) if f" {norm} " in t}
    if whole:
        return whole
    words = set(norm.split())
    shares = [len(words & set(t.split())) / len(words) for t in texts]
    best = max(shares, default=0.0)
    if best < _SUPPORT_WORDS:
        return set()
    return {i for i, share in enumerate(shares, 1) if share == best}
