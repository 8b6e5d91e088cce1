"""``EdgeStore``: Qdrant Edge (the Qdrant engine in process), one shard per collection.

Each write is flushed before it returns, so an acknowledged document survives a crash or
restart. A shard's WAL admits one opener, so a data dir belongs to one process at a time. The
folders, locks and crash rules of one collection live in ``edge_shard``.

Qdrant Edge has no background optimizer: a shard stays one plain (brute-force) segment until
``build_index`` builds its HNSW graph, on a copy in a child process (``edge_index``), and swaps
the copy in.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from retrieval.errors import (
    CollectionExists,
    CollectionNotFound,
    IndexBuildRunning,
    StoreUnavailable,
)
from retrieval.store.base import (
    INDEX_BUILDS_KEY,
    INDEXED_KEYWORDS,
    IndexReport,
    check_dims,
    check_name,
    index_builds,
)
from retrieval.store.edge_query import WITH_KEYWORDS, edge_filter, keyword_request, named_vectors
from retrieval.store.edge_shard import (
    INDEXER,
    SHARD,
    EdgeCollection,
    HnswParams,
    IndexBuild,
    close_collection,
    drop_leftovers,
    edge_config,
    swap_in_build,
    write_meta,
)
from retrieval.store.keywords import SPARSE, Keywords, cosine
from retrieval.types import (
    CollectionInfo,
    EmbedderSpec,
    FilterValue,
    Point,
    ScoredChunk,
)


class EdgeStore:
    """The embedded default ``VectorStore``; see ``retrieval.store.base`` for the contract.

    Args:
        root: The folder of the collections.
        hnsw: HNSW build parameters, applied to new collections and to every index build.
        hnsw_ef: Candidates per HNSW search; None = Qdrant's default (``ef_construct``).
        indexer: The command that builds an index (``edge_index``); tests inject failing ones.

    Example:
        >>> store = EdgeStore(Path("/tmp/covrag-edge"))
        >>> store.create_collection("docs", EmbedderSpec("all-MiniLM-L6-v2", 384))
    """

    def __init__(
        self,
        root: Path,
        *,
        hnsw: HnswParams | None = None,
        hnsw_ef: int | None = None,
        indexer: Sequence[str] = INDEXER,
    ) -> None:
        self._root = root
        self._root.mkdir(parents=True, exist_ok=True)
        self._hnsw = hnsw or HnswParams()
        self._search_params = None if hnsw_ef is None else qe.SearchParams(hnsw_ef=hnsw_ef)
        self._indexer = tuple(indexer)
        self._keywords = Keywords()
        self._collections: dict[str, EdgeCollection] = {}
        self._lock = threading.Lock()  # the dict above, and which collections exist

    # -- collections ----------------------------------------------------------------------
    def create_collection(self, name: str, embedder: EmbedderSpec) -> CollectionInfo:
        check_name(name)
        folder = self._root / name
        with self._lock:
            if (folder / "meta.json").exists():
                raise CollectionExists(f"collection {name!r} exists already")
            shutil.rmtree(folder, ignore_errors=True)  # a half-created leftover
            config = edge_config(embedder.dim, self._hnsw, keywords=True)
            shard = qe.EdgeShard.create(str(folder / SHARD), config)
            for key in INDEXED_KEYWORDS:
                shard.update(
                    qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword)
                )
            shard.update(
                qe.UpdateOperation.create_field_index("chunk_index", qe.PayloadSchemaType.Integer)
            )
            shard.flush()
            meta = {
                "model": embedder.model,
                "dim": embedder.dim,
                "created_at": datetime.now(UTC).isoformat(),
                "keywords": SPARSE,
            }
            write_meta(folder, meta)  # the collection exists once this lands
            self._collections[name] = EdgeCollection(folder, meta, shard)
        return self.get_collection(name)

    def _open(self, name: str) -> EdgeCollection:
        """The collection (its shard is loaded by the first call into it)."""
        with self._lock:
            collection = self._collections.get(name)
            if collection is not None:
                return collection
            meta_path = self._root / check_name(name) / "meta.json"
            if not meta_path.exists():
                raise CollectionNotFound(f"collection {name!r} not found")
            collection = EdgeCollection(meta_path.parent, json.loads(meta_path.read_text()))
            self._collections[name] = collection
            return collection

    @contextmanager
    def _shard(self, name: str) -> Iterator[qe.EdgeShard]:
        """The live shard, for one call into it."""
        collection = self._open(name)
        with collection.calls:
            yield collection.live()

    def shard_info(self, name: str) -> qe.ShardInfo:
        """Qdrant Edge's own figures for a collection's shard (segments, indexed vectors):
        below the ``VectorStore`` API, which has no segments; for benchmarks and diagnosis."""
        with self._shard(name) as shard:
            return shard.info()

    def get_collection(self, name: str) -> CollectionInfo:
        with self._shard(name) as shard:
            info = shard.info()
            documents = shard.count(qe.CountRequest(filter=edge_filter({"chunk_index": 0})))
            # Qdrant counts each keyword vector as indexed (an inverted index always is); the
            # dense vectors' HNSW index is what ``indexed`` reports.
            words = shard.count(WITH_KEYWORDS) if self._has_keywords(name) else 0
        return CollectionInfo(
            name=name,
            embedder=self.embedder(name),
            created_at=datetime.fromisoformat(str(self._open(name).meta["created_at"])),
            chunks=info.points_count,
            documents=documents,
            # see CollectionInfo
            indexed=max(0, min(info.indexed_vectors_count - words, info.points_count)),
        )

    def list_collections(self) -> list[CollectionInfo]:
        names = sorted(p.parent.name for p in self._root.glob("*/meta.json"))
        return [self.get_collection(n) for n in names]

    def delete_collection(self, name: str) -> None:
        collection = self._open(name)
        with collection.writes:
            if collection.build is not None:
                collection.build.stop("the collection was deleted")
            with collection.calls, self._lock:
                if collection.closed:
                    raise CollectionNotFound(f"collection {name!r} not found")
                close_collection(collection)
                self._collections.pop(name, None)  # close() may have emptied it already
                # Drop the marker first: a crash mid-rmtree leaves no half-collection behind.
                (collection.folder / "meta.json").unlink()
                shutil.rmtree(collection.folder)

    # -- points ---------------------------------------------------------------------------
    def upsert(self, name: str, points: Sequence[Point]) -> None:
        if not points:
            return
        check_dims(name, self.embedder(name), [p.vector for p in points])
        words = self._has_keywords(name)
        self._write(
            name,
            qe.UpdateOperation.upsert_points(
                [
                    qe.Point(
                        id=p.id,
                        vector=named_vectors(p, self._keywords) if words else p.vector,
                        payload=p.payload,
                    )
                    for p in points
                ]
            ),
        )

    def _has_keywords(self, name: str) -> bool:
        """Whether the collection has keyword vectors (those created before them do not)."""
        return self._open(name).meta.get("keywords") == SPARSE

    def delete(
        self, name: str, filters: Mapping[str, FilterValue], min_chunk_index: int = 0
    ) -> None:
        flt = edge_filter(filters, min_chunk_index)
        if flt is None:
            raise ValueError("refusing to delete without a filter")
        self._write(name, qe.UpdateOperation.delete_points_by_filter(flt))

    def _write(self, name: str, op: qe.UpdateOperation) -> None:
        """Apply ``op`` durably; during an index build, also keep it for the built copy."""
        collection = self._open(name)
        with collection.writes, collection.calls:
            shard = collection.live()
            shard.update(op)
            shard.flush()
            if collection.build is not None:
                collection.build.ops.append(op)

    def get_payloads(self, name: str, ids: Sequence[str]) -> dict[str, dict[str, object]]:
        with self._shard(name) as shard:
            records = shard.retrieve(list(ids), with_payload=True, with_vector=False)
        return {str(r.id): dict(r.payload or {}) for r in records}

    def count(self, name: str, filters: Mapping[str, FilterValue] | None = None) -> int:
        with self._shard(name) as shard:
            return shard.count(qe.CountRequest(filter=edge_filter(filters)))

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
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(list(vector)),
            filter=edge_filter(filters),
            score_threshold=score_threshold,
            with_payload=True,
            params=self._search_params,
        )
        with self._shard(name) as shard:
            hits = shard.query(request)
        return [
            ScoredChunk(id=str(h.id), score=h.score, payload=dict(h.payload or {})) for h in hits
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
        with self._shard(name) as shard:
            hits = shard.query(keyword_request(terms, limit, filters))
        return [
            ScoredChunk(id=str(h.id), score=cosine(vector, h.vector), payload=dict(h.payload or {}))
            for h in hits
        ]

    def scroll(
        self,
        name: str,
        *,
        limit: int,
        offset: str | None = None,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> tuple[dict[str, dict[str, object]], str | None]:
        request = qe.ScrollRequest(
            offset=offset,
            limit=limit,
            filter=edge_filter(filters),
            with_payload=True,
            with_vector=False,
        )
        with self._shard(name) as shard:
            records, after = shard.scroll(request)
        return {str(r.id): dict(r.payload or {}) for r in records}, None if after is None else str(
            after
        )

    def list_ids(self, name: str) -> list[str]:
        ids: list[str] = []
        offset = None
        with self._shard(name) as shard:
            while True:
                records, offset = shard.scroll(
                    qe.ScrollRequest(
                        offset=offset, limit=1000, with_payload=False, with_vector=False
                    )
                )
                ids += [str(r.id) for r in records]
                if offset is None:
                    return sorted(ids)

    def get_metadata(self, name: str) -> dict[str, Any]:
        return dict(self._open(name).meta.get("extra") or {})

    def update_metadata(self, name: str, values: Mapping[str, Any]) -> None:
        collection = self._open(name)
        with collection.writes:  # one read-modify-write at a time
            if collection.closed:
                raise CollectionNotFound(f"collection {name!r} not found")
            meta = dict(collection.meta)
            meta["extra"] = {**(meta.get("extra") or {}), **values}
            write_meta(collection.folder, meta)
            collection.meta = meta

    # -- index ----------------------------------------------------------------------------
    def build_index(self, name: str, *, timeout_s: float | None = None) -> IndexReport:
        """Build the collection's HNSW index while it stays served; one build per collection
        at a time (a second raises ``IndexBuildRunning``).

        ``optimize()`` holds the GIL for its whole run (minutes at 100k chunks), so it runs in
        a child process, on a copy of the shard. While the copy is taken (it needs the shard's
        size in free disk), searches go on and this collection's writes wait. From then on,
        writes go to the live shard and are also kept (in memory), to be replayed on the
        built copy before it is swapped in, with writes and calls locked out. A failed,
        timed-out or stopped build (``delete_collection``, ``close``) drops the copy and
        raises ``IndexBuildFailed``; the live shard was never touched. ``recover`` resolves
        what a crash leaves.
        """
        start = time.perf_counter()
        collection = self._open(name)
        folder = collection.folder
        with collection.writes:
            if collection.build is not None:
                raise IndexBuildRunning(f"an index build of {name!r} is running already")
            with collection.calls:
                collection.live().flush()
            collection.build = build = IndexBuild.begin(
                self._indexer,
                folder,
                self.embedder(name).dim,
                self._hnsw,
                keywords=self._has_keywords(name),
            )
        try:
            stderr = build.wait(timeout_s)
            with collection.writes, collection.calls:
                build.check(name, stderr)
                # Counted first: a swap cut short may still leave the index in place (finished
                # by the next call), and a calibration wrongly kept is worse than one redone.
                self.update_metadata(name, {INDEX_BUILDS_KEY: index_builds(self, name) + 1})
                info = swap_in_build(collection, build.ops)
                replayed = len(build.ops)
        finally:
            drop_leftovers(folder)  # outside the locks: removing a shard-sized folder takes time
            with collection.writes:
                collection.build = None
        return IndexReport(
            seconds=round(time.perf_counter() - start, 3),
            replayed=replayed,
            indexed=self.get_collection(name).indexed,
            segments=info.segments_count,
        )

    def ping(self) -> None:
        if not self._root.is_dir():
            raise StoreUnavailable(f"data folder {self._root} is gone")

    def close(self) -> None:
        with self._lock:
            collections = list(self._collections.values())
        for collection in collections:
            with collection.writes:  # a build being copied is registered by then
                if collection.build is not None:
                    collection.build.stop("the store was closed")
                with collection.calls:
                    close_collection(collection)
        with self._lock:
            self._collections.clear()

    def embedder(self, name: str) -> EmbedderSpec:
        meta = self._open(name).meta
        return EmbedderSpec(model=str(meta["model"]), dim=int(str(meta["dim"])))
