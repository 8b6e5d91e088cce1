"""Plain, frozen value types shared by retrieval's parts (pydantic lives only at the HTTP seam)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

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
    """A search hit: the stored payload and its cosine similarity to the query (and, when the
    threshold is on another scale, the chunk's score on it: its relative share or the
    reranker's relevance, in [0, 1])."""

    id: str
    score: float
    payload: dict[str, Any]
    relevance: float | None = None

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


#: What a threshold is on: the cosine, a chunk's share of its question's top candidates
#: (``retrieval.conformal.RelativeScale``), or the reranker's relevance.
Scale = Literal["cosine", "relative", "rerank"]


@dataclass(frozen=True, slots=True)
class CalibrationRef:
    """What a response says about the calibration behind its threshold: its size, version and
    freshness, the group whose q̂ applied (``group_n`` questions; ``fallback``: too few
    for α, so the pooled q̂ applied instead) and every group the question counts in
    (``groups``: its set of kinds, or the caller's group), whose largest q̂ applied."""

    n: int
    version: int
    stale: bool
    group: str
    group_n: int
    fallback: bool
    groups: tuple[str, ...]
    #: k̂: the documents round 0's passages name that the context adds for a question that
    #: may be multi-hop (``retrieval.links``); None when none are calibrated for it.
    links: int | None = None
    scale: Scale = "cosine"


@dataclass(frozen=True, slots=True)
class Retrieval:
    """The passages for one question and what the filter guarantees about them."""

    hits: list[ScoredChunk]
    alpha: float | None = None
    threshold: float | None = None
    #: The threshold the cosine scale has for the same request (``threshold`` itself when
    #: that is on the cosine): what the critic's margin is measured against, as it was
    #: trained on.
    cosine_threshold: float | None = None
    coverage_guaranteed: bool = False
    calibration: CalibrationRef | None = None
    budget: int = 0
    budget_cut: bool = False
    #: On a calibrated collection, the passages among ``hits`` that joined the chunks that
    #: cleared the threshold: keyword hits (hybrid search) and linked documents' (multi-hop).
    joined: int = 0
    #: Filters were given and no chunk of the collection matches them: there was nothing to
    #: search, which an empty result alone does not tell from nothing close enough.
    filter_matched_nothing: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: The question's embedding, searched with; the caller may cache it.
    vector: list[float] = field(default_factory=list, repr=False)
    #: The best chunk's similarity, whether or not it cleared the threshold (of a filtered
    #: search, only when one did), and the question's multi-hop score (calibrated
    #: collections only): the shift watch's inputs.
    top_similarity: float | None = None
    multi_hop: float | None = None
    #: What the caller should know about this retrieval (the shift watch's alarm).
    warnings: tuple[str, ...] = ()

    @property
    def coverage_target(self) -> float | None:
        return None if self.alpha is None else 1.0 - self.alpha

    @property
    def none_cleared(self) -> bool:
        """Nothing cleared a finite threshold (keyword hits may still be there): the abstain
        signal the critic builds on, and a shift-watch input."""
        return self.threshold is not None and len(self.hits) == self.joined


@dataclass(frozen=True, slots=True)
class Budget:
    """The context budget: at most ``chunks`` passages and ``chars`` characters of text."""

    chunks: int
    chars: int
