"""Ingestion with the real MiniLM embedder into both real stores."""

from __future__ import annotations

import pytest

from retrieval.chunking import chunk_id
from retrieval.embed import Embedder
from retrieval.errors import DocumentNotFound, EmbedderMismatch, InvalidDocument
from retrieval.ingest import Ingestor
from retrieval.store import VectorStore
from retrieval.types import Document, EmbedderSpec


@pytest.fixture
def ingestor(store: VectorStore, embedder: Embedder) -> Ingestor:
    return Ingestor(store, embedder, chunk_words=20, chunk_overlap=5)


LONG = " ".join(f"Sentence {i} is about the river Thames and London." for i in range(12))


def test_ingest_is_idempotent(
    ingestor: Ingestor, store: VectorStore, wiki_sample: list[Document]
) -> None:
    docs = wiki_sample[:10]
    first = ingestor.ingest("w", docs)
    assert (first.added, first.updated, first.unchanged) == (10, 0, 0)
    before = store.get_collection("w")
    second = ingestor.ingest("w", docs)
    assert (second.added, second.updated, second.unchanged, second.chunks_written) == (0, 0, 10, 0)
    after = store.get_collection("w")
    assert (
        (after.chunks, after.documents)
        == (before.chunks, before.documents)
        == (first.chunks_written, 10)
    )


def test_changed_document_replaces_its_chunks(ingestor: Ingestor, store: VectorStore) -> None:
    ingestor.ingest("c", [Document(id="d", text=LONG, title="Thames")])
    n_long = store.count("c", {"doc_id": "d"})
    assert n_long > 2
    report = ingestor.ingest(
        "c", [Document(id="d", text="Paris is the capital of France.", title="Paris")]
    )
    assert (report.updated, report.chunks_written) == (1, 1)
    assert store.count("c", {"doc_id": "d"}) == 1
    payload = store.get_payloads("c", [chunk_id("d", 0)])[chunk_id("d", 0)]
    assert payload["text"] == "Paris is the capital of France." and payload["title"] == "Paris"


def test_delete_document(ingestor: Ingestor, store: VectorStore) -> None:
    ingestor.ingest("c", [Document(id="a", text=LONG), Document(id="b", text="Short text.")])
    removed = ingestor.delete("c", "a")
    assert removed > 1
    assert store.count("c", {"doc_id": "a"}) == 0 and store.count("c", {"doc_id": "b"}) == 1
    with pytest.raises(DocumentNotFound):
        ingestor.delete("c", "a")


def test_bad_document_changes_nothing(ingestor: Ingestor, store: VectorStore) -> None:
    ingestor.ingest("c", [Document(id="keep", text="Kept text.")])
    for bad in (
        [Document(id="x", text="fine"), Document(id="y", text="   ")],
        [Document(id="x", text="one"), Document(id="x", text="two")],
    ):
        with pytest.raises(InvalidDocument):
            ingestor.ingest("c", bad)
    assert store.count("c") == 1


def test_search_finds_the_right_wiki_article(
    ingestor: Ingestor, store: VectorStore, embedder: Embedder, wiki_sample: list[Document]
) -> None:
    ingestor.ingest("w", wiki_sample)
    vector = embedder.embed(["Which NASA center controls the Hubble Space Telescope?"])[0]
    hits = store.search("w", vector.tolist(), limit=3)
    assert hits[0].doc_id == "Hubble Space Telescope"
    assert hits[0].score > hits[-1].score


def test_refuses_collection_of_another_embedder(ingestor: Ingestor, store: VectorStore) -> None:
    store.create_collection("other", EmbedderSpec(model="another-model", dim=384))
    with pytest.raises(EmbedderMismatch):
        ingestor.ingest("other", [Document(id="a", text="text")])


def test_change_counter_counts_writes_and_deletes(ingestor: Ingestor, store: VectorStore) -> None:
    from retrieval.ingest import collection_changes

    ingestor.ingest("c", [Document(id="a", text=LONG), Document(id="b", text="Short.")])
    n_a = store.count("c", {"doc_id": "a"})
    assert collection_changes(store, "c") == n_a + 1
    ingestor.ingest("c", [Document(id="b", text="Short.")])  # unchanged: no change
    assert collection_changes(store, "c") == n_a + 1
    ingestor.ingest("c", [Document(id="a", text="Now short.")])  # 1 rewritten + tail deleted
    assert collection_changes(store, "c") == 2 * n_a + 1
    ingestor.delete("c", "b")
    assert collection_changes(store, "c") == 2 * n_a + 2


def test_progress_moves_with_chunks_embedded(store: VectorStore, embedder: Embedder) -> None:
    """One long document reports after every ``embed_batch`` chunks, not once at the end;
    unchanged ones count at once; a sequence's total is known from the start."""
    ingestor = Ingestor(store, embedder, chunk_words=20, chunk_overlap=5, embed_batch=2)
    calls: list[tuple[int, int]] = []
    ingestor.ingest("c", [Document(id="long", text=LONG)], progress=lambda *a: calls.append(a))
    n = store.count("c")
    assert n >= 5
    assert calls == [(min(i, n), n) for i in range(2, n + 2, 2)]
    calls.clear()
    docs = [Document(id="long", text=LONG), Document(id="b", text="Short text.")]
    ingestor.ingest("c", docs, progress=lambda *a: calls.append(a))
    assert calls == [(n, n + 1), (n + 1, n + 1)]  # the unchanged one, then the new one


def test_a_document_over_the_character_limit_changes_nothing(
    store: VectorStore, embedder: Embedder
) -> None:
    ingestor = Ingestor(store, embedder, chunk_words=20, chunk_overlap=5, max_document_chars=20)
    ok = Document(id="ok", text="x" * 20)
    with pytest.raises(InvalidDocument, match=r"'big' \(documents\[1\]\) has 21 char") as err:
        ingestor.ingest("c", [ok, Document(id="big", text="x" * 21)])
    assert err.value.param == "documents[1].text"
    assert store.count("c") == 0
    assert ingestor.ingest("c", [ok]).added == 1
