"""Hybrid search: the keyword (BM25) hits beside the dense ones, in one ranking.

The conformal guarantee is about the dense score: the nonconformity score stays 1 − cosine
similarity, calibrated and thresholded as before, so the chunks that clear the threshold hold
the answer-bearing one with probability ≥ 1 − α. Hybrid search only *adds* the best keyword
hits to that set, within the budget, and never drops a chunk that cleared the threshold:
a superset of the conformal set covers at least as often, so the guarantee holds unchanged
(and ``budget_cut`` still means the budget cut a chunk that cleared it). What the keywords
change is what else the context holds, a rare exact token (a part number, a surname) dense
search ranks low, and the order: every passage is ranked by reciprocal rank fusion of its
dense and keyword ranks.

Without a calibration (plain top-k), hybrid is the usual fusion: the top k of the dense and
the keyword lists fused by rank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from retrieval.types import ScoredChunk

#: How a request searches: the dense vectors only, or with the keyword vectors too.
SearchMode = Literal["dense", "hybrid"]
#: Reciprocal rank fusion's constant (the usual 60: rank 1 scores 1/61, rank 2 1/62, …).
RRF_K = 60


def rrf(ranked: Sequence[Sequence[ScoredChunk]]) -> list[ScoredChunk]:
    """The hits of every list, each once, by reciprocal rank fusion: Σ 1 / (``RRF_K`` + rank)
    over the lists that hold it; ties keep the order of first appearance (dense first)."""
    fused: dict[str, float] = {}
    hits: dict[str, ScoredChunk] = {}
    for hits_list in ranked:
        for rank, hit in enumerate(hits_list, 1):
            fused[hit.id] = fused.get(hit.id, 0.0) + 1.0 / (RRF_K + rank)
            hits.setdefault(hit.id, hit)
    order = sorted(fused, key=lambda i: -fused[i])  # sorted() is stable
    return [hits[i] for i in order]


def with_keywords(
    dense: list[ScoredChunk],
    words: list[ScoredChunk],
    *,
    conformal: bool,
    extra: int,
    fits: Callable[[list[ScoredChunk]], bool],
) -> list[ScoredChunk]:
    """The context of a hybrid search, fused by rank.

    ``conformal``: ``dense`` is the conformal set (as the budget kept it); every one of them
    stays, and up to ``extra`` keyword hits not among them join while ``fits`` (the budget)
    allows. Else ``dense`` is the plain top k, and the fused list keeps as many as ``dense``
    had, the keyword hits competing for the places.
    """
    if not conformal:
        size = len(dense)
        fused = rrf([dense, words])
        kept: list[ScoredChunk] = []
        for hit in fused:
            if len(kept) == size or not fits([*kept, hit]):
                break
            kept.append(hit)
        return kept
    have = {h.id for h in dense}
    kept = list(dense)
    for hit in [w for w in words if w.id not in have][:extra]:
        if not fits([*kept, hit]):
            break
        kept.append(hit)
    ids = {h.id for h in kept}
    return [h for h in rrf([dense, words]) if h.id in ids]
