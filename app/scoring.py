"""Answer scoring against gold aliases: normalized exact match, token F1, containment."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal

from retrieval.calibration import normalize_answer

Match = Literal["em", "contains", "none"]


def exact_match(answer: str, golds: Sequence[str]) -> bool:
    norm = normalize_answer(answer)
    return any(norm == normalize_answer(g) for g in golds if g)


def contains(answer: str, golds: Sequence[str]) -> bool:
    """A gold alias occurs in the answer (the 135M model answers in sentences)."""
    norm = f" {normalize_answer(answer)} "
    return any(f" {normalize_answer(g)} " in norm for g in golds if normalize_answer(g))


def f1(answer: str, golds: Sequence[str]) -> float:
    """Best SQuAD token F1 over the aliases."""
    pred = normalize_answer(answer).split()
    best = 0.0
    for gold in golds:
        ref = normalize_answer(gold).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            p, r = common / len(pred), common / len(ref)
            best = max(best, 2 * p * r / (p + r))
    return best


def match(answer: str, golds: Sequence[str]) -> Match:
    """How the answer matches: exact, by containment, or not at all."""
    if exact_match(answer, golds):
        return "em"
    return "contains" if contains(answer, golds) else "none"
