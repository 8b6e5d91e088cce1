"""Plain, frozen value types shared by retrieval's parts (pydantic lives only at the HTTP seam)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Payload values a filter can match exactly.
FilterScalar = str | int | bool
#: A filter item's value: one to match exactly, or a list of which a point matches any.
FilterValue = FilterScalar | list[FilterScalar]


@dataclass(frozen=True, slots=True)
class EmbedderSpec:
    """What a collection records about the embedder that filled it."""

    model: str
    dim: int


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """A collection's identity and counts.

    ``indexed`` is Qdrant's ``indexed_vectors_count`` (vectors in HNSW-indexed segments; the
    rest are searched by brute force) capped at ``chunks``: Qdrant counts a deleted or
    rewritten point there until its segment is rebuilt, so uncapped it claimed 9 indexed
    chunks in a collection emptied of its 9. An upper bound until the next build.
    """

    name: str
    embedder: EmbedderSpec
    created_at: datetime
    chunks: int
    documents: int
    indexed: int


@dataclass(frozen=True, slots=True)
class Document:
    """A document to ingest. ``id`` is the caller's stable key (the article title for ``wiki``).

    ``page_starts`` holds, for a source with pages (a PDF), the offset in ``text`` at which
    each page begins, page 1 first: its chunks then keep within one page and carry its number.
    """

    id: str
    text: str
    title: str | None = None
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    page_starts: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Chunk:
    """A window of a document, with where it came from."""

    id: str
    doc_id: str
    chunk_index: int
    text: str
    title: str
    source: str | None
    char_start: int
    char_end: int
    doc_hash: str
    metadata: dict[str, Any] = field(default_factory=dict)
    page: int | None = None

    def payload(self) -> dict[str, Any]:
        """The store payload; ``doc_hash`` lets re-ingestion skip unchanged documents. ``page``
        only where the source has pages, so other payloads stay as they were."""
        page = {} if self.page is None else {"page": self.page}
        return {
            "doc_id": self.doc_id,
            "chunk_index": self.chunk_index,
            "text": self.text,
            "title": self.title,
            "source": self.source,
            "char_start": self.char_start,
            "char_end": self.char_end,
            "doc_hash": self.doc_hash,
            "metadata": self.metadata,
            **page,
        }


@dataclass(frozen=True, slots=True)
class Point:
    """A vector with its id and payload, as the store keeps it, and the words keyword search
    matches it by (a chunk's title and text; empty: none)."""

    id: str
    vector: list[float]
    payload: dict[str, Any]
    text: str = ""


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    """A search hit: the stored payload and its cosine similarity to the query."""

    id: str
    score: float
    payload: dict[str, Any]

    @property
    def doc_id(self) -> str:
        return str(self.payload["doc_id"])

    @property
    def title(self) -> str:
        return str(self.payload.get("title") or self.payload["doc_id"])

    @property
    def text(self) -> str:
        return str(self.payload["text"])

    @property
    def source(self) -> str | None:
        source = self.payload.get("source")
        return None if source is None else str(source)

    @property
    def page(self) -> int | None:
        page = self.payload.get("page")
        return None if page is None else int(page)


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """A stored document: its id, title and chunk count."""

    id: str
    title: str
    chunks: int


@dataclass(frozen=True, slots=True)
class DocumentPage:
    """One page of a collection's documents in chunk-id order; ``cursor`` starts the next
    page (None after the last); ``total`` counts every document of the collection."""

    documents: list[DocumentInfo]
    total: int
    cursor: str | None
