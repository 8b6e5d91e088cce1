"""The second hop without an LLM: documents a passage names by title, ranked by the question."""

from __future__ import annotations

import pytest

from retrieval.embed import Embedder
from retrieval.ingest import Ingestor
from retrieval.retriever import Retriever, named
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
