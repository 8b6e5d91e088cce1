"""The ``VectorStore`` protocol: one contract, an embedded (Edge) and a server (Qdrant) backend.

Contract (``tests/retrieval/test_store_contract.py`` runs it against both backends):

- A collection is created with the ``EmbedderSpec`` that will fill it and records it with its
  creation time; upserts and searches with vectors of another dimension raise
  ``EmbedderMismatch``. Unknown collections raise ``CollectionNotFound``.
- Similarity is cosine: scores lie in [-1, 1], higher is closer.
- ``search`` returns at most ``limit`` hits, best first, only those with
  ``score >= score_threshold`` when a threshold is given, and only points whose payload
  matches every ``filters`` item: its value equals the item's, or one of them for a list
  value (keys are dotted paths into the payload, which ``retrieval.filters`` derives from a
  query's keys; an array in the payload matches if any element does). ``count`` and
  ``delete`` filter the same way. A score equal
  to the threshold within float32 rounding may fall either way: to keep ties, subtract an
  epsilon from the threshold.
- ``keyword_search`` ranks by BM25 over each point's ``text`` (Qdrant's sparse vectors with its
  IDF modifier, ``retrieval.store.keywords``) and scores each hit, as ``search`` does, by its
  cosine similarity to the query vector; a collection created before keyword vectors existed
  raises ``KeywordsUnavailable``.
- ``CollectionInfo.indexed`` never exceeds ``chunks``.
- Upserting an existing id replaces the point. Writes are durable once the call returns.
- ``build_index`` leaves the collection's content as it was: searches and writes made while it
  runs are served and kept. A build that ran (Edge) adds one to the collection's
  ``index_builds`` metadata: a calibration taken before it no longer holds (see
  ``retrieval.conformal.Calibration``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from retrieval.errors import EmbedderMismatch, InvalidCollectionName
from retrieval.types import CollectionInfo, EmbedderSpec, FilterValue, Point, ScoredChunk

#: A valid collection name; the API declares the same pattern, so clients learn it from the schema.
COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

#: Metadata key: how many index builds a collection has had (Qdrant server indexes on its own
#: and never counts one).
INDEX_BUILDS_KEY = "index_builds"

#: Payload fields with an index: ``doc_id`` for per-document replacement and deletion.
INDEXED_KEYWORDS = ("doc_id", "title", "source")


@dataclass(frozen=True, slots=True)
class IndexReport:
    """What one index build did: its wall time, the writes it replayed, the result."""

    seconds: float
    replayed: int
    indexed: int
    segments: int


class VectorStore(Protocol):
    """Collections of payload-carrying vectors with filtered cosine search."""

    def create_collection(self, name: str, embedder: EmbedderSpec) -> CollectionInfo: ...

    def get_collection(self, name: str) -> CollectionInfo: ...

    def embedder(self, name: str) -> EmbedderSpec:
        """The collection's embedder; ``CollectionNotFound`` if it does not exist. On every
        query's path, so it must not count or scan (``get_collection`` does both)."""
        ...

    def list_collections(self) -> list[CollectionInfo]: ...

    def delete_collection(self, name: str) -> None: ...

    def upsert(self, name: str, points: Sequence[Point]) -> None: ...

    def delete(
        self, name: str, filters: Mapping[str, FilterValue], min_chunk_index: int = 0
    ) -> None:
        """Delete the points matching ``filters`` whose ``chunk_index >= min_chunk_index``."""
        ...

    def get_payloads(self, name: str, ids: Sequence[str]) -> dict[str, dict[str, object]]:
        """Payloads of the points among ``ids`` that exist, keyed by id."""
        ...

    def count(self, name: str, filters: Mapping[str, FilterValue] | None = None) -> int: ...

    def search(
        self,
        name: str,
        vector: Sequence[float],
        *,
        limit: int,
        score_threshold: float | None = None,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[ScoredChunk]: ...

    def keyword_search(
        self,
        name: str,
        text: str,
        vector: Sequence[float],
        *,
        limit: int,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[ScoredChunk]:
        """The ``limit`` points whose words best match ``text`` (BM25), best first, each
        scored by its cosine similarity to ``vector``."""
        ...

    def scroll(
        self,
        name: str,
        *,
        limit: int,
        offset: str | None = None,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> tuple[dict[str, dict[str, object]], str | None]:
        """Up to ``limit`` payloads of the points matching ``filters``, keyed by id in id
        order, from id ``offset`` on; and the next page's offset (None after the last)."""
        ...

    def list_ids(self, name: str) -> list[str]:
        """Every point id of the collection, sorted (for seeded sampling)."""
        ...

    def get_metadata(self, name: str) -> dict[str, Any]:
        """covrag's own per-collection record (calibration, change counter); ``{}`` at first."""
        ...

    def update_metadata(self, name: str, values: Mapping[str, Any]) -> None:
        """Merge ``values`` into that record (top-level keys replace), durably."""
        ...

    def build_index(self, name: str, *, timeout_s: float | None = None) -> IndexReport:
        """Index the collection's vectors (HNSW) now, or report where the backend stands.

        Raises ``IndexBuildRunning`` while another build of ``name`` runs and
        ``IndexBuildFailed`` (the collection left as it was) when the build fails or outlasts
        ``timeout_s``.
        """
        ...

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""
        ...

    def close(self) -> None: ...


def check_dims(name: str, embedder: EmbedderSpec, vectors: Sequence[Sequence[float]]) -> None:
    """Refuse vectors whose dimension differs from the collection's embedder."""
    for vector in vectors:
        if len(vector) != embedder.dim:
            raise EmbedderMismatch(
                f"collection {name!r} holds {embedder.dim}-d vectors of {embedder.model}; "
                f"got a {len(vector)}-d vector"
            )


def check_name(name: str) -> str:
    """Collection names double as folder names: keep them to a safe alphabet."""
    if not COLLECTION_NAME.fullmatch(name):
        raise InvalidCollectionName(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def index_builds(store: VectorStore, name: str) -> int:
    """The collection's count of completed index builds (0: never built)."""
    return int(store.get_metadata(name).get(INDEX_BUILDS_KEY, 0))


def index_due(
    info: CollectionInfo, chunks_written: int, *, threshold: int, reindex_fraction: float
) -> bool:
    """Whether an ingestion that wrote ``chunks_written`` chunks into ``info``'s collection
    should be followed by an index build: once it has ``threshold`` chunks (0 = never) and none
    are indexed, then again once ``reindex_fraction`` of them are not (a build copies the whole
    collection, so not one per ingestion)."""
    # ``indexed`` still counts deleted points, so chunks written over deleted ones show only in
    # this ingestion's count.
    unindexed = max(info.chunks - info.indexed, chunks_written)
    if threshold == 0 or info.chunks < threshold or unindexed <= 0:
        return False
    return info.indexed == 0 or unindexed >= reindex_fraction * info.chunks
