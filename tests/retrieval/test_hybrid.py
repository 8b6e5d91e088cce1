"""Hybrid search on the real embedder and real Qdrant Edge: a rare surname dense search ranks
low is found by its keyword vector, and the conformal set stays whole."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from retrieval.calibration import calibrate
from retrieval.calibration_set import CalibrationItem
from retrieval.embed.base import Embedder
from retrieval.hybrid import rrf, with_keywords
from retrieval.ingest import Ingestor
from retrieval.retriever import Retriever
from retrieval.store import EdgeStore
from retrieval.types import Budget, Document, ScoredChunk

#: A surname the corpus holds once, in a letter about nothing the question names.
LETTER = Document(
    id="letter",
    title="Letters from the expedition",
    text="The expedition reached the northern glacier in July after six weeks at sea. The "
    "surveyor Wojciechowski mapped the crevasse field, and the cook kept the dogs fed through "
    "the storms. In August the party turned south.",
)
QUESTION = "What did Wojciechowski do?"


@pytest.fixture(scope="module")
def retriever(
    wiki_docs: list[Document], embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Retriever]:
    """300 Wikipedia summaries and the letter, in one Edge collection."""
    store = EdgeStore(tmp_path_factory.mktemp("hybrid"))
    sample = wiki_docs[:: len(wiki_docs) // 300][:300]
    Ingestor(store, embedder, chunk_words=120, chunk_overlap=20).ingest("c", [*sample, LETTER])
    yield Retriever(store, embedder, keyword_hits=3)
    store.close()


def _rank(hits: list[ScoredChunk], doc_id: str) -> int | None:
    return next((i for i, h in enumerate(hits, 1) if h.doc_id == doc_id), None)


def test_a_rare_surname_dense_ranks_low_is_found_with_hybrid(retriever: Retriever) -> None:
    vector = retriever.embedder.embed([QUESTION])[0].tolist()
    dense_rank = _rank(retriever.store.search("c", vector, limit=100), "letter")
    assert dense_rank is not None and dense_rank > 10  # the case hybrid search is for
    budget = Budget(chunks=5, chars=10**6)
    dense = retriever.retrieve("c", QUESTION, alpha=None, budget=budget)
    hybrid = retriever.retrieve("c", QUESTION, alpha=None, budget=budget, search="hybrid")
    assert _rank(dense.hits, "letter") is None
    rank = _rank(hybrid.hits, "letter")
    assert rank is not None and rank <= 3
    assert len(hybrid.hits) == 5  # top-k: the keyword hits compete for the k places


def test_hybrid_keeps_every_chunk_that_cleared_the_threshold(
    retriever: Retriever, wiki_docs: list[Document]
) -> None:
    store = retriever.store
    sample = wiki_docs[:: len(wiki_docs) // 300][:300]
    items = [
        CalibrationItem(id=d.id, question=f"What is {d.title}?", gold_doc_ids=(d.id,))
        for d in sample[:60]
    ]
    calibrate(store, retriever.embedder, "c", items, source="test", default_alpha=0.1)
    budget = Budget(chunks=10, chars=10**6)
    # nothing clears the threshold for the surname; its keyword hit is the evidence there is
    alone = retriever.retrieve("c", QUESTION, alpha=0.2, budget=budget, search="hybrid")
    assert retriever.retrieve("c", QUESTION, alpha=0.2, budget=budget).hits == []
    assert _rank(alone.hits, "letter") == 1 and len(alone.hits) == alone.joined <= 3
    assert alone.none_cleared  # the critic and the shift watch still see nothing cleared
    question = f"Tell me about {sample[70].title}."
    dense = retriever.retrieve("c", question, alpha=0.2, budget=budget)
    hybrid = retriever.retrieve("c", question, alpha=0.2, budget=budget, search="hybrid")
    assert dense.hits, "the check below needs chunks that cleared the threshold"
    cleared = {h.id for h in dense.hits}
    assert cleared <= {h.id for h in hybrid.hits}  # the conformal set, whole
    assert len(hybrid.hits) == len(dense.hits) + hybrid.joined and hybrid.joined <= 3
    assert not hybrid.none_cleared
    assert (hybrid.threshold, hybrid.coverage_guaranteed, hybrid.budget_cut) == (
        dense.threshold,
        dense.coverage_guaranteed,
        dense.budget_cut,
    )
    # a budget the conformal set fills leaves no room: nothing joins, nothing is dropped
    full = Budget(chunks=len(dense.hits), chars=10**6)
    tight = retriever.retrieve("c", question, alpha=0.2, budget=full, search="hybrid")
    assert {h.id for h in tight.hits} == cleared


def _hit(i: str) -> ScoredChunk:
    return ScoredChunk(id=i, score=0.5, payload={"doc_id": i, "text": "x" * 10, "title": i})


def test_reciprocal_rank_fusion_orders_by_both_ranks() -> None:
    a, b, c, d = map(_hit, "abcd")
    # c is second in both lists and beats a and d, each first in one list only
    assert [h.id for h in rrf([[a, c, b], [d, c]])] == ["c", "a", "d", "b"]
    fits = lambda hs: len(hs) <= 3  # noqa: E731
    assert [h.id for h in with_keywords([a, b], [d], conformal=True, extra=1, fits=fits)] == [
        "a",
        "d",
        "b",
    ]
    assert [h.id for h in with_keywords([a, b, c], [d], conformal=True, extra=1, fits=fits)] == [
        "a",
        "b",
        "c",
    ]
    assert [h.id for h in with_keywords([a, b], [d, c], conformal=False, extra=1, fits=fits)] == [
        "a",
        "d",
    ]
