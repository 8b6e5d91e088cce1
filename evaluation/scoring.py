"""Answer scoring against gold aliases: normalized exact match, token F1, containment."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from retrieval.calibration_set import normalize_answer

Match = Literal["em", "contains", "none"]


def _has(text: str, phrase: str) -> bool:
    """``phrase`` (normalized) stands in ``text`` as whole words; an empty one never does."""
    return bool(phrase) and f" {phrase} " in f" {text} "


def exact_match(answer: str, golds: Sequence[str]) -> bool:
    norm = normalize_answer(answer)
    return any(norm == normalize_answer(g) for g in golds if g)


def contains(answer: str, golds: Sequence[str]) -> bool:
    """A gold alias occurs in the answer (the 135M model answers in sentences)."""
    norm = normalize_answer(answer)
    return any(_has(norm, normalize_answer(g)) for g in golds)


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


#: A right answer names a gold alias within this many words (so verbosity cannot game it).
RIGHT_WITHIN_WORDS = 12


def right_answer(answer: str, golds: Sequence[str], others: Sequence[str] = ()) -> bool:
    """A gold alias within the answer's first ``RIGHT_WITHIN_WORDS`` words, and none of
    ``others`` (a comparison's other candidate) named there."""
    head = " ".join(normalize_answer(answer).split()[:RIGHT_WITHIN_WORDS])
    if any(_has(head, normalize_answer(o)) for o in others):
        return False
    return any(_has(head, normalize_answer(g)) for g in golds)


def others_compared(qa: Mapping[str, Any]) -> list[str]:
    """A comparison's candidates that are not the answer: its gold titles that neither hold
    nor sit inside any gold alias."""
    golds = [normalize_answer(str(a)) for a in qa.get("answers") or []]
    titles = [(str(t), normalize_answer(str(t))) for t in qa.get("gold_titles") or []]
    return [t for t, norm in titles if not any(_has(norm, g) or _has(g, norm) for g in golds)]
