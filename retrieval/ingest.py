"""Ingestion: documents → chunks → vectors → store, idempotent per document.

- Unchanged document (same content hash on its chunk 0): skipped, nothing is written.
- Changed document: its chunks are overwritten in place (same deterministic ids), then chunks
  past its new length are deleted; at no moment is the document absent from the store.
- Every document of a call is validated before anything is written, so a bad one changes
  nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

import numpy as np

from retrieval.chunking import chunk_document, embedding_text
from retrieval.embed.base import Embedder, Matrix
from retrieval.errors import CollectionNotFound, DocumentNotFound, EmbedderMismatch, InvalidDocument
from retrieval.store.base import VectorStore
from retrieval.types import (
    Chunk,
    CollectionInfo,
    Document,
    DocumentInfo,
    DocumentPage,
    Point,
)

T = TypeVar("T")

#: Metadata key of a collection's change counter: chunks written or deleted since creation.
CHANGES_KEY = "changes"


def collection_changes(store: VectorStore, collection: str) -> int:
    """The collection's change counter (0 for a fresh collection)."""
    return int(store.get_metadata(collection).get(CHANGES_KEY, 0))


@dataclass(slots=True)
class _Progress:
    """Chunks done and known of one ``ingest`` call, reported to its ``progress`` callback."""

    report: Callable[[int, int], None] | None
    done: int = 0
    total: int = 0

    def advance(self, n: int) -> None:
        self.done += n
        if self.report is not None:
            self.report(self.done, self.total)


def _batched(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while batch := list(islice(items, size)):
        yield batch


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

    Args:
        max_document_chars: Longest document text accepted (``InvalidDocument`` beyond).
        embed_batch: Chunks embedded between two progress reports, so a job's progress moves
            with the chunks embedded, whatever the size of its documents.

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
        max_document_chars: int | None = None,
        batch_docs: int = 64,
        embed_batch: int = 64,
    ) -> None:
        if chunk_overlap >= chunk_words:
            raise ValueError("chunk_overlap must be below chunk_words")
        self._store = store
        self._embedder = embedder
        self._words = chunk_words
        self._overlap = chunk_overlap
        self._max_chars = max_document_chars
        self._batch_docs = batch_docs
        self._embed_batch = embed_batch

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
        """Chunk every document, raising ``InvalidDocument`` (its ``param`` the document's
        place in ``docs``) before any write."""
        seen: set[str] = set()
        chunked: list[list[Chunk]] = []
        for i, doc in enumerate(docs):
            if doc.id in seen:
                raise InvalidDocument(
                    f"document id {doc.id!r} appears twice in one request", f"documents[{i}].id"
                )
            seen.add(doc.id)
            if self._max_chars is not None and len(doc.text) > self._max_chars:
                raise InvalidDocument(  # before chunking it: that is the costly part
                    f"document {doc.id!r} (documents[{i}]) has {len(doc.text):,} characters; "
                    f"the limit is {self._max_chars:,} (COVRAG_MAX_DOCUMENT_CHARS)",
                    f"documents[{i}].text",
                )
            try:
                chunked.append(chunk_document(doc, words=self._words, overlap=self._overlap))
            except InvalidDocument as exc:  # e.g. page starts outside the text
                raise InvalidDocument(str(exc), exc.param or f"documents[{i}]") from exc
        return chunked

    def ingest(
        self,
        collection: str,
        docs: Iterable[Document],
        progress: Callable[[int, int], None] | None = None,
    ) -> IngestReport:
        """Ingest ``docs`` in batches; ``progress(done, total)`` counts chunks embedded or found
        unchanged, after every ``embed_batch`` of them.

        A finite sequence is validated whole first (``total`` is then exact); an unbounded
        iterable batch by batch (``total`` counts the chunks of the documents seen so far).
        """
        self.ensure_collection(collection)
        totals = [0, 0, 0, 0, 0]
        counter = _Progress(progress)
        known = isinstance(docs, Sequence)
        if isinstance(docs, Sequence):
            chunked = self.validate(docs)
            counter.total = sum(map(len, chunked))
            batches = _batched(iter(chunked), self._batch_docs)
        else:
            batches = map(self.validate, _batched(iter(docs), self._batch_docs))
        for batch in batches:
            if not known:
                counter.total += sum(map(len, batch))
            for i, n in enumerate(self._ingest_batch(collection, batch, counter)):
                totals[i] += n
        return IngestReport(*totals)

    def _ingest_batch(
        self, collection: str, chunked: list[list[Chunk]], counter: _Progress
    ) -> tuple[int, int, int, int, int]:
        existing = self._store.get_payloads(collection, [chunks[0].id for chunks in chunked])
        todo: list[list[Chunk]] = []
        added = updated = unchanged = 0
        for chunks in chunked:
            old = existing.get(chunks[0].id)
            if old is None:
                added += 1
            elif old.get("doc_hash") == chunks[0].doc_hash:
                unchanged += 1
                counter.advance(len(chunks))
                continue
            else:
                updated += 1
            todo.append(chunks)
        flat = [c for chunks in todo for c in chunks]
        if flat:
            parts: list[Matrix] = []
            for i in range(0, len(flat), self._embed_batch):
                part = flat[i : i + self._embed_batch]
                parts.append(self._embedder.embed([embedding_text(c) for c in part]))
                counter.advance(len(part))
            vectors = np.concatenate(parts)
            # One write for the batch, as before: a document is replaced in one step.
            self._store.upsert(
                collection,
                [
                    Point(id=c.id, vector=v.tolist(), payload=c.payload(), text=embedding_text(c))
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
        return len(chunked), added, updated, unchanged, len(flat)

    def _count_changes(self, collection: str, n: int) -> None:
        """Advance the collection's change counter (calibration staleness, cache versions)."""
        if n:
            changes = collection_changes(self._store, collection)
            self._store.update_metadata(collection, {CHANGES_KEY: changes + n})

    def documents(self, collection: str, *, limit: int, cursor: str | None = None) -> DocumentPage:
        """A page of ``collection``'s documents (their chunk 0s, in id order) with chunk counts;
        ``cursor`` is the previous page's. Raises ``CollectionNotFound``."""
        firsts, after = self._store.scroll(
            collection, limit=limit, offset=cursor, filters={"chunk_index": 0}
        )
        documents = [
            DocumentInfo(
                id=str(payload["doc_id"]),
                title=str(payload.get("title") or payload["doc_id"]),
                chunks=self._store.count(collection, {"doc_id": str(payload["doc_id"])}),
            )
            for payload in firsts.values()
        ]
        total = self._store.count(collection, {"chunk_index": 0})
        return DocumentPage(documents=documents, total=total, cursor=after)

    def delete(self, collection: str, doc_id: str) -> int:
        """Remove every chunk of ``doc_id``; returns how many. Raises ``DocumentNotFound``."""
        n = self._store.count(collection, {"doc_id": doc_id})
        if n == 0:
            raise DocumentNotFound(f"document {doc_id!r} is not in collection {collection!r}")
        self._store.delete(collection, {"doc_id": doc_id})
        self._count_changes(collection, n)
        return n
