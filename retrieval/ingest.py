"""Ingestion: documents → chunks → vectors → store, idempotent per document.

- Unchanged document (same content hash on its chunk 0): skipped, nothing is written.
- Changed document: its chunks are overwritten in place (same deterministic ids), then chunks
  past its new length are deleted; at no moment is the document absent from the store.
- Every document of a call is validated before anything is written, so a bad one changes
  nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

from retrieval.chunking import chunk_document, chunk_id, embedding_text
from retrieval.embed.base import Embedder
from retrieval.errors import CollectionNotFound, DocumentNotFound, EmbedderMismatch, InvalidDocument
from retrieval.store.base import VectorStore
from retrieval.types import Chunk, CollectionInfo, Document, Point

#: Metadata key of a collection's change counter: chunks written or deleted since creation.
CHANGES_KEY = "changes"


def collection_changes(store: VectorStore, collection: str) -> int:
    """The collection's change counter (0 for a fresh collection)."""
    return int(store.get_metadata(collection).get(CHANGES_KEY, 0))


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What one ingestion call did."""

    documents: int
    added: int
    updated: int
    unchanged: int
    chunks_written: int


class Ingestor:
    """Writes documents into a collection of ``store`` with ``embedder``.

    Example:
        >>> ingestor = Ingestor(store, embedder, chunk_words=160, chunk_overlap=32)
        >>> ingestor.ingest("docs", [Document(id="a", text="Some text.")])
    """

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        *,
        chunk_words: int,
        chunk_overlap: int,
        batch_docs: int = 64,
    ) -> None:
        if chunk_overlap >= chunk_words:
            raise ValueError("chunk_overlap must be below chunk_words")
        self._store = store
        self._embedder = embedder
        self._words = chunk_words
        self._overlap = chunk_overlap
        self._batch_docs = batch_docs

    def ensure_collection(self, name: str) -> CollectionInfo:
        """The collection, created for this embedder if missing; refuses another embedder's."""
        try:
            info = self._store.get_collection(name)
        except CollectionNotFound:
            return self._store.create_collection(name, self._embedder.spec)
        if info.embedder != self._embedder.spec:
            raise EmbedderMismatch(
                f"collection {name!r} was built with {info.embedder.model} "
                f"({info.embedder.dim}-d); this server embeds with {self._embedder.spec.model} "
                f"({self._embedder.spec.dim}-d)"
            )
        return info

    def validate(self, docs: Sequence[Document]) -> list[list[Chunk]]:
        """Chunk every document, raising ``InvalidDocument`` before any write."""
        seen: set[str] = set()
        for doc in docs:
            if doc.id in seen:
                raise InvalidDocument(f"document id {doc.id!r} appears twice in one request")
            seen.add(doc.id)
        return [chunk_document(d, words=self._words, overlap=self._overlap) for d in docs]

    def ingest(
        self,
        collection: str,
        docs: Iterable[Document],
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Ingest ``docs`` in batches; ``progress(n)`` is called with each batch's size.

        A finite sequence is validated whole first; an unbounded iterable batch by batch.
        """
        self.ensure_collection(collection)
        if isinstance(docs, Sequence):
            self.validate(docs)
        totals = [0, 0, 0, 0, 0]
        iterator = iter(docs)
        while batch := list(islice(iterator, self._batch_docs)):
            for i, n in enumerate(self._ingest_batch(collection, batch)):
                totals[i] += n
            if progress is not None:
                progress(len(batch))
        return IngestReport(*totals)

    def _ingest_batch(
        self, collection: str, docs: list[Document]
    ) -> tuple[int, int, int, int, int]:
        chunked = self.validate(docs)
        existing = self._store.get_payloads(collection, [chunk_id(d.id, 0) for d in docs])
        todo: list[list[Chunk]] = []
        added = updated = unchanged = 0
        for chunks in chunked:
            old = existing.get(chunks[0].id)
            if old is None:
                added += 1
            elif old.get("doc_hash") == chunks[0].doc_hash:
                unchanged += 1
                continue
            else:
                updated += 1
            todo.append(chunks)
        flat = [c for chunks in todo for c in chunks]
        if flat:
            vectors = self._embedder.embed([embedding_text(c) for c in flat])
            self._store.upsert(
                collection,
                [
                    Point(id=c.id, vector=v.tolist(), payload=c.payload())
                    for c, v in zip(flat, vectors, strict=True)
                ],
            )
        changed = len(flat)
        for chunks in todo:
            if existing.get(chunks[0].id) is None:
                continue
            doc = {"doc_id": chunks[0].doc_id}
            surplus = self._store.count(collection, doc) - len(chunks)
            if surplus > 0:  # the changed document got shorter: drop its old tail
                self._store.delete(collection, doc, min_chunk_index=len(chunks))
                changed += surplus
        self._count_changes(collection, changed)
        return len(docs), added, updated, unchanged, len(flat)

    def _count_changes(self, collection: str, n: int) -> None:
        """Advance the collection's change counter (calibration staleness, cache versions)."""
        if n:
            changes = collection_changes(self._store, collection)
            self._store.update_metadata(collection, {CHANGES_KEY: changes + n})

    def delete(self, collection: str, doc_id: str) -> int:
        """Remove every chunk of ``doc_id``; returns how many. Raises ``DocumentNotFound``."""
        n = self._store.count(collection, {"doc_id": doc_id})
        if n == 0:
            raise DocumentNotFound(f"document {doc_id!r} is not in collection {collection!r}")
        self._store.delete(collection, {"doc_id": doc_id})
        self._count_changes(collection, n)
        return n
