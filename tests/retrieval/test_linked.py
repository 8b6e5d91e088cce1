"""The second hop without an LLM: documents a passage names by title, ranked by the question."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval.calibration import calibrate
from retrieval.calibration_set import load_qa
from retrieval.embed import Embedder
from retrieval.ingest import Ingestor
from retrieval.kinds import BRIDGE_GROUP, KindClassifier
from retrieval.links import LINK_FROM, link_rank, named
from retrieval.retriever import Retriever
from retrieval.store import VectorStore
from retrieval.types import Budget, Document


def test_names_are_runs_of_capitalised_words_first_mention_first() -> None:
    text = (
        "Dynamite was invented by the Swedish chemist Alfred Nobel in Geesthacht. "
        "The Sound and the Fury is a novel. It flows into the Bay of Bengal."
    )
    assert named([text]) == [
        "Dynamite",
        "Swedish",
        "Alfred Nobel",
        "Geesthacht",
        "The Sound and the Fury",
        "Sound and the Fury",
        "It",
        "Bay of Bengal",
    ]


DOCS = [
    Document(
        id="d1",
        title="Dynamite",
        text="Dynamite is an explosive invented by the Swedish chemist Alfred Nobel in "
        "Geesthacht and patented in 1867. It is used in mining and quarrying.",
    ),
    Document(
        id="d2",
        title="Alfred Nobel",
        text="Alfred Nobel was a Swedish chemist and inventor. He held 355 patents, and his "
        "fortune funds the Nobel Prizes.",
    ),
    Document(
        id="d3",
        title="Geesthacht",
        text="Geesthacht is a town in Schleswig-Holstein on the river Elbe.",
    ),
    Document(id="d4", title="Sweden", text="Sweden is a country in Northern Europe."),
]


@pytest.mark.parametrize("filters", [{}, {"source": "s"}])
def test_the_named_document_the_question_asks_about_ranks_first(
    store: VectorStore, embedder: Embedder, filters: dict[str, str]
) -> None:
    docs = [Document(d.id, d.text, d.title, source="s") for d in DOCS]
    Ingestor(store, embedder, chunk_words=60, chunk_overlap=10).ingest("c", docs)
    retriever = Retriever(store, embedder)
    question = "How many patents did the inventor of dynamite hold?"
    first = retriever.retrieve("c", question, alpha=None, budget=Budget(1, 6000))
    assert [h.title for h in first.hits] == ["Dynamite"]
    found = retriever.linked("c", first.vector, first.hits, filters)
    # Sweden is named nowhere ("Swedish"), Dynamite is the passage itself
    assert [h.title for h in found] == ["Alfred Nobel", "Geesthacht"]
    assert found[0].score > found[1].score
    # a caller who chose the document by title leaves nothing to link to
    assert retriever.linked("c", first.vector, first.hits, {"title": "Dynamite"}) == []


QA = Path(__file__).resolve().parents[2] / "data" / "qa"


def test_linked_documents_hold_the_last_hop_as_calibrated(
    store: VectorStore, embedder: Embedder, wiki_docs: list[Document]
) -> None:
    """Calibrated on labelled multi-hop questions, a held-out one that may be multi-hop gets
    the top ``LINK_FROM`` hits and k̂ linked documents: its last hop is in the context whenever
    its link rank is at most k̂, and the response names k̂ and flags the guarantee."""
    bridge = [it for it in load_qa(QA / "dev.jsonl").items if it.kind == "bridge"]
    by_id = {d.id: d for d in wiki_docs}
    needed = {d for it in bridge for d in (*it.gold_doc_ids, *_first_hops(it.id))}
    distractors = [d for d in wiki_docs[::300] if d.id not in needed]
    docs = [by_id[d] for d in sorted(needed) if d in by_id] + distractors
    Ingestor(store, embedder, chunk_words=120, chunk_overlap=20).ingest("w", docs)
    calibrating, held_out = bridge[:30], bridge[30:]
    cal = calibrate(store, embedder, "w", calibrating, source="test", default_alpha=0.2)
    kinds = KindClassifier.load()
    assert len(cal.links) == sum(BRIDGE_GROUP in kinds.groups(it.question) for it in calibrating)
    assert cal.link_from == LINK_FROM
    k = cal.link_quantile(0.2)
    assert k is not None and cal.link_quantile(0.01) is None  # too few for α = 0.01
    retriever = Retriever(store, embedder, multi_hop_links=True)
    budget = Budget(chunks=50, chars=10**6)
    checked = within = 0
    for item in held_out:
        out = retriever.retrieve("w", item.question, alpha=0.2, budget=budget)
        assert out.calibration is not None
        if BRIDGE_GROUP not in out.calibration.groups:
            assert out.calibration.links is None
            continue
        checked += 1
        assert out.calibration.links == k
        assert out.coverage_guaranteed == (not out.calibration.fallback and not out.budget_cut)
        assert len(out.hits) >= LINK_FROM
        if link_rank(store, "w", out.vector, item.gold_doc_ids) <= k:
            within += 1
            assert item.gold_doc_ids[-1] in {h.doc_id for h in out.hits}
    assert checked >= 10 and within >= checked // 2
    # a tight budget that cannot hold the linked documents: no guarantee, and it says why
    multi = next(it for it in held_out if BRIDGE_GROUP in kinds.groups(it.question))
    tight = retriever.retrieve("w", multi.question, alpha=0.2, budget=Budget(2, 10**6))
    assert tight.calibration is not None and tight.calibration.links == k
    assert len(tight.hits) == 2 and tight.budget_cut and not tight.coverage_guaranteed
    # COVRAG_MULTI_HOP_LINKS=false (the default): round 0's passages only, and no guarantee
    off = Retriever(store, embedder).retrieve("w", multi.question, alpha=0.2, budget=budget)
    assert off.calibration is not None and off.calibration.links is None
    assert not off.coverage_guaranteed


def _first_hops(qid: str) -> tuple[str, ...]:
    """A bridge question's first-hop document (``load_qa`` keeps only its last hop)."""
    rows = (json.loads(line) for line in (QA / "dev.jsonl").open())
    return tuple(next(r["gold_titles"][:-1] for r in rows if r["id"] == qid))
