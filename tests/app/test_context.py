"""How rounds build the prompt's context: dedupe, the character budget, later-round eviction."""

from __future__ import annotations

from app.core.context import LATER_ROUND_CHUNKS, extend_context
from retrieval.types import ScoredChunk


def chunk(cid: str, score: float) -> ScoredChunk:
    """A chunk that costs 100 characters of budget (text + title + 8)."""
    text = "x" * (100 - 8 - len(cid))
    return ScoredChunk(id=cid, score=score, payload={"doc_id": cid, "title": cid, "text": text})


def test_round_zero_fills_the_budget_in_order_and_skips_duplicates() -> None:
    context: list[ScoredChunk] = []
    hits = [chunk("a", 0.9), chunk("a", 0.9), chunk("b", 0.8), chunk("c", 0.7), chunk("d", 0.6)]
    added, evicted = extend_context(context, hits, False, 300, set())
    assert (added, evicted) == (["a", "b", "c"], [])
    assert [c.id for c in context] == ["a", "b", "c"]


def test_a_later_round_displaces_the_weakest_but_never_the_best() -> None:
    context = [chunk("a", 0.5), chunk("b", 0.9), chunk("c", 0.7)]
    dropped: set[str] = set()
    hits = [chunk("b", 0.9), chunk("n1", 0.6), chunk("n2", 0.55)]
    added, evicted = extend_context(context, hits, True, 300, dropped)
    assert added == ["n1", "n2"]
    assert evicted == ["c", "b"]  # the lowest scores after the first (the question's best) chunk
    assert [c.id for c in context] == ["a", "n1", "n2"]
    # an evicted chunk does not come back in a later round
    added, _ = extend_context(context, [chunk("c", 0.99), chunk("n3", 0.4)], True, 400, dropped)
    assert added == ["n3"]


def test_a_later_round_brings_at_most_its_share() -> None:
    context = [chunk("a", 0.9)]
    hits = [chunk(f"n{i}", 0.5) for i in range(LATER_ROUND_CHUNKS + 2)]
    added, evicted = extend_context(context, hits, True, 10_000, set())
    assert added == [f"n{i}" for i in range(LATER_ROUND_CHUNKS)] and evicted == []
