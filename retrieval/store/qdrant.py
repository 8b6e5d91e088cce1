"""``QdrantStore``: a Qdrant server or cluster through ``qdrant-client``.

The same class runs against qdrant-client's local mode (``location=":memory:"`` or a path),
which speaks the same client API; the tests use that, as no Qdrant server can run here.
The embedder spec and creation time live in the collection's own ``metadata``. A Qdrant
server builds HNSW indexes itself, in the background, so ``build_index`` only reports.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from retrieval.errors import (
    CollectionExists,
    CollectionNotFound,
    StoreUnavailable,
)
from retrieval.store.base import INDEXED_KEYWORDS, IndexReport, check_dims, check_name
from retrieval.store.keywords import SPARSE, Keywords, Terms, cosine
from retrieval.types import CollectionInfo, EmbedderSpec, FilterValue, Point, ScoredChunk


def _condition(key: str, value: FilterValue) -> qm.Condition:
    """One filter item; a list becomes a ``should`` of exact matches, as on Edge."""
    if isinstance(value, list):
        return qm.Filter(
            should=[qm.FieldCondition(key=key, match=qm.MatchValue(value=v)) for v in value]
        )
    return qm.FieldCondition(key=key, match=qm.MatchValue(value=value))


def _filter(
    filters: Mapping[str, FilterValue] | None, min_chunk_index: int = 0
) -> qm.Filter | None:
    must: list[qm.Condition] = [_condition(key, value) for key, value in (filters or {}).items()]
    if min_chunk_index > 0:
        must.append(qm.FieldCondition(key="chunk_index", range=qm.Range(gte=min_chunk_index)))
    return qm.Filter(must=must) if must else None


def _sparse(terms: Terms) -> qm.SparseVector:
    return qm.SparseVector(indices=terms[0], values=terms[1])


class QdrantStore:
    """``VectorStore`` over qdrant-client; see ``retrieval.store.base`` for the contract.

    Args:
        url: Qdrant server URL; mutually exclusive with ``location``.
        location: ``":memory:"`` or a folder for qdrant-client's local mode.
        shard_number, replication_factor, write_consistency_factor: applied to collections
            this store creates (ignored by local mode).

    Example:
        >>> store = QdrantStore(location=":memory:")
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        location: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
    ) -> None:
        if (url is None) == (location is None):
            raise ValueError("give exactly one of url (server) or location (local mode)")
        if url is not None:
            self._client = QdrantClient(url=url, api_key=api_key, timeout=int(timeout_s))
        elif location == ":memory:":
            self._client = QdrantClient(location=":memory:")
        else:
            self._client = QdrantClient(path=location)
        self._cluster = {
            "shard_number": shard_number,
            "replication_factor": replication_factor,
            "write_consistency_factor": write_consistency_factor,
        }
        self._specs: dict[str, EmbedderSpec] = {}
        #: Per collection, whether it has keyword vectors (read once, as ``_specs``).
        self._words: dict[str, bool] = {}
        self._keywords = Keywords()
        # Local mode is numpy state without locks of its own: calls from the server's thread
        # pool must take turns (tests/retrieval/test_store_contract.py). A server's client is
        # safe across threads.
        self._turns: AbstractContextManager[object] = (
            nullcontext() if url is not None else threading.Lock()
        )

    def create_collection(self, name: str, embedder: EmbedderSpec) -> CollectionInfo:
        check_name(name)
        if self._exists(name):
            raise CollectionExists(f"collection {name!r} exists already")
        created = datetime.now(UTC).isoformat()
        self._call(
            self._client.create_collection,
            name,
            vectors_config=qm.VectorParams(size=embedder.dim, distance=qm.Distance.COSINE),
            sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
            metadata={
                "covrag_model": embedder.model,
                "covrag_dim": embedder.dim,
                "created_at": created,
                "covrag_keywords": SPARSE,
            },
            **{k: v for k, v in self._cluster.items() if v is not None},
        )
        for key in INDEXED_KEYWORDS:
            self._call(self._client.create_payload_index, name, key, qm.PayloadSchemaType.KEYWORD)
        self._call(
            self._client.create_payload_index, name, "chunk_index", qm.PayloadSchemaType.INTEGER
        )
        return self.get_collection(name)

    def get_collection(self, name: str) -> CollectionInfo:
        info = self._info(name)
        meta = dict(info.config.metadata or {})
        chunks = self.count(name)
        # Qdrant counts each keyword vector as indexed (an inverted index always is); the
        # dense vectors' HNSW index is what ``indexed`` reports.
        words = (
            self._call(
                self._client.count,
                name,
                count_filter=qm.Filter(must=[qm.HasVectorCondition(has_vector=SPARSE)]),
                exact=True,
            ).count
            if self._has_keywords(name)
            else 0
        )
        return CollectionInfo(
            name=name,
            embedder=self.embedder(name),
            created_at=datetime.fromisoformat(str(meta["created_at"])),
            chunks=chunks,
            documents=self.count(name, {"chunk_index": 0}),
            indexed=max(0, min((info.indexed_vectors_count or 0) - words, chunks)),
        )

    def list_collections(self) -> list[CollectionInfo]:
        response = self._call(self._client.get_collections)
        names = sorted(c.name for c in response.collections)
        return [self.get_collection(n) for n in names if "covrag_model" in self._metadata(n)]

    def delete_collection(self, name: str) -> None:
        self.embedder(name)
        self._call(self._client.delete_collection, name)
        self._specs.pop(name, None)
        self._words.pop(name, None)

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        if not points:
            return
        check_dims(name, self.embedder(name), [p.vector for p in points])
        words = self._has_keywords(name)
        self._call(
            self._client.upsert,
            name,
            points=[
                qm.PointStruct(
                    id=p.id, vector=self._vectors(p) if words else p.vector, payload=p.payload
                )
                for p in points
            ],
            wait=True,
        )

    def _vectors(self, point: Point) -> dict[str, list[float] | qm.SparseVector]:
        """The dense vector, and the keyword vector unless the text has no word the model
        keeps (so that the keyword vectors can be counted exactly, as on Edge)."""
        terms = self._keywords.document(point.text)
        vectors: dict[str, list[float] | qm.SparseVector] = {"": point.vector}
        if terms[0]:
            vectors[SPARSE] = _sparse(terms)
        return vectors

    def _has_keywords(self, name: str) -> bool:
        """Whether the collection has keyword vectors (those created before them do not)."""
        words = self._words.get(name)
        if words is None:
            words = self._words[name] = self._metadata(name).get("covrag_keywords") == SPARSE
        return words

    def delete(
        self, name: str, filters: Mapping[str, FilterValue], min_chunk_index: int = 0
    ) -> None:
        flt = _filter(filters, min_chunk_index)
        if flt is None:
            raise ValueError("refusing to delete without a filter")
        self.embedder(name)
        self._call(
            self._client.delete, name, points_selector=qm.FilterSelector(filter=flt), wait=True
        )

    def get_payloads(self, name: str, ids: Sequence[str]) -> dict[str, dict[str, object]]:
        self.embedder(name)
        records = self._call(self._client.retrieve, name, ids=list(ids), with_payload=True)
        return {str(r.id): dict(r.payload or {}) for r in records}

    def count(self, name: str, filters: Mapping[str, FilterValue] | None = None) -> int:
        self.embedder(name)
        return int(
            self._call(self._client.count, name, count_filter=_filter(filters), exact=True).count
        )

    def search(
        self,
        name: str,
        vector: Sequence[float],
        *,
        limit: int,
        score_threshold: float | None = None,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[ScoredChunk]:
        check_dims(name, self.embedder(name), [vector])
        response = self._call(
            self._client.query_points,
            name,
            query=list(vector),
            query_filter=_filter(filters),
            limit=limit,
            score_threshold=score_threshold,
            with_payload=True,
        )
        return [
            ScoredChunk(id=str(p.id), score=float(p.score), payload=dict(p.payload or {}))
            for p in response.points
        ]

    def keyword_search(
        self,
        name: str,
        text: str,
        vector: Sequence[float],
        *,
        limit: int,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[ScoredChunk]:
        check_dims(name, self.embedder(name), [vector])
        terms = self._keywords.query(name, text, has_keywords=self._has_keywords(name))
        if not terms[0]:
            return []
        response = self._call(
            self._client.query_points,
            name,
            query=_sparse(terms),
            using=SPARSE,
            query_filter=_filter(filters),
            limit=limit,
            with_payload=True,
            with_vectors=[""],
        )
        return [
            ScoredChunk(id=str(p.id), score=cosine(vector, p.vector), payload=dict(p.payload or {}))
            for p in response.points
        ]

    def scroll(
        self,
        name: str,
        *,
        limit: int,
        offset: str | None = None,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> tuple[dict[str, dict[str, object]], str | None]:
        self.embedder(name)
        records, after = self._call(
            self._client.scroll,
            name,
            scroll_filter=_filter(filters),
            limit=limit,
            offset=offset,
            with_payload=True,
        )
        return {str(r.id): dict(r.payload or {}) for r in records}, None if after is None else str(
            after
        )

    def list_ids(self, name: str) -> list[str]:
        self.embedder(name)
        ids: list[str] = []
        offset = None
        while True:
            records, offset = self._call(
                self._client.scroll, name, limit=1000, offset=offset, with_payload=False
            )
            ids += [str(r.id) for r in records]
            if offset is None:
                return sorted(ids)

    def get_metadata(self, name: str) -> dict[str, Any]:
        return dict(self._metadata(name).get("extra") or {})

    def update_metadata(self, name: str, values: Mapping[str, Any]) -> None:
        extra = {**self.get_metadata(name), **values}
        self._call(self._client.update_collection, name, metadata={"extra": extra})

    def build_index(self, name: str, *, timeout_s: float | None = None) -> IndexReport:
        """Report the server's own indexing (its optimizer indexes segments past its indexing
        threshold in the background); nothing runs, so ``timeout_s`` bounds nothing. Local
        mode has no index and reports 0 indexed."""
        self.embedder(name)
        info = self._info(name)
        return IndexReport(
            seconds=0.0,
            replayed=0,
            indexed=info.indexed_vectors_count or 0,
            segments=info.segments_count,
        )

    def ping(self) -> None:
        self._call(self._client.get_collections)

    def close(self) -> None:
        self._client.close()

    # -- helpers --------------------------------------------------------------------------
    def _exists(self, name: str) -> bool:
        return bool(self._call(self._client.collection_exists, name))

    def _info(self, name: str) -> qm.CollectionInfo:
        check_name(name)
        if not self._exists(name):
            raise CollectionNotFound(f"collection {name!r} not found")
        info: qm.CollectionInfo = self._call(self._client.get_collection, name)
        return info

    def _metadata(self, name: str) -> dict[str, Any]:
        return dict(self._info(name).config.metadata or {})

    def embedder(self, name: str) -> EmbedderSpec:
        spec = self._specs.get(name)
        if spec is None:
            meta = self._metadata(name)
            if "covrag_model" not in meta:
                raise CollectionNotFound(f"collection {name!r} was not created by covrag")
            spec = EmbedderSpec(model=str(meta["covrag_model"]), dim=int(meta["covrag_dim"]))
            self._specs[name] = spec
        return spec

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Turn transport failures into ``StoreUnavailable`` (503), keeping domain errors."""
        try:
            with self._turns:
                return fn(*args, **kwargs)
        except (
            ResponseHandlingException,
            UnexpectedResponse,
            ConnectionError,
            TimeoutError,
        ) as exc:
            raise StoreUnavailable(f"Qdrant did not answer: {exc}") from exc
