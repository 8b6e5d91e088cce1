"""``EdgeStore``: Qdrant Edge (the Qdrant engine in process), one shard per collection.

Layout: ``<root>/<collection>/meta.json`` (embedder, creation time) beside
``<root>/<collection>/shard`` (segments + WAL). Each write is flushed before it returns, so an
acknowledged document survives a crash or restart. A shard's WAL admits one opener, so a
data dir belongs to one process at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from retrieval.errors import CollectionExists, CollectionNotFound, StoreUnavailable
from retrieval.store.base import INDEXED_KEYWORDS, check_dims, check_name
from retrieval.types import CollectionInfo, EmbedderSpec, FilterValue, Point, ScoredChunk


def _filter(
    filters: Mapping[str, FilterValue] | None, min_chunk_index: int = 0
) -> qe.Filter | None:
    must: list[qe.FieldCondition] = [
        qe.FieldCondition(key=key, match=qe.MatchValue(value))
        for key, value in (filters or {}).items()
    ]
    if min_chunk_index > 0:
        must.append(qe.FieldCondition(key="chunk_index", range=qe.RangeFloat(gte=min_chunk_index)))
    return qe.Filter(must=must) if must else None


class EdgeStore:
    """The embedded default ``VectorStore``; see ``retrieval.store.base`` for the contract.

    Example:
        >>> store = EdgeStore(Path("/tmp/covrag-edge"))
        >>> store.create_collection("docs", EmbedderSpec("all-MiniLM-L6-v2", 384))
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        # The shard binding is not documented as thread-safe; uvicorn calls us from a pool.
        self._lock = threading.RLock()

    # -- collections ----------------------------------------------------------------------
    def create_collection(self, name: str, embedder: EmbedderSpec) -> CollectionInfo:
        check_name(name)
        folder = self._root / name
        with self._lock:
            if (folder / "meta.json").exists():
                raise CollectionExists(f"collection {name!r} exists already")
            shutil.rmtree(folder, ignore_errors=True)  # a half-created leftover
            config = qe.EdgeConfig(
                vectors=qe.EdgeVectorParams(size=embedder.dim, distance=qe.Distance.Cosine)
            )
            shard = qe.EdgeShard.create(str(folder / "shard"), config)
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
            }
            self._write_meta(name, meta)  # the collection exists once this lands
            self._shards[name] = shard
        return self.get_collection(name)

    def _open(self, name: str) -> qe.EdgeShard:
        with self._lock:
            shard = self._shards.get(name)
            if shard is not None:
                return shard
            meta_path = self._root / check_name(name) / "meta.json"
            if not meta_path.exists():
                raise CollectionNotFound(f"collection {name!r} not found")
            try:
                shard = qe.EdgeShard.load(str(self._root / name / "shard"))
            except Exception as exc:  # the binding raises bare Exception
                raise StoreUnavailable(f"cannot open collection {name!r}: {exc}") from exc
            self._shards[name] = shard
            self._meta[name] = json.loads(meta_path.read_text())
            return shard

    def get_collection(self, name: str) -> CollectionInfo:
        with self._lock:
            shard = self._open(name)
            meta = self._meta[name]
            chunks = shard.info().points_count
            documents = shard.count(qe.CountRequest(filter=_filter({"chunk_index": 0})))
        return CollectionInfo(
            name=name,
            embedder=self._spec(name),
            created_at=datetime.fromisoformat(str(meta["created_at"])),
            chunks=chunks,
            documents=documents,
        )

    def list_collections(self) -> list[CollectionInfo]:
        names = sorted(p.parent.name for p in self._root.glob("*/meta.json"))
        return [self.get_collection(n) for n in names]

    def delete_collection(self, name: str) -> None:
        with self._lock:
            self._open(name).close()
            del self._shards[name], self._meta[name]
            # Drop the marker first: a crash mid-rmtree leaves no half-collection behind.
            (self._root / name / "meta.json").unlink()
            shutil.rmtree(self._root / name)

    # -- points ---------------------------------------------------------------------------
    def upsert(self, name: str, points: Sequence[Point]) -> None:
        if not points:
            return
        check_dims(name, self._spec(name), [p.vector for p in points])
        with self._lock:
            shard = self._open(name)
            shard.update(
                qe.UpdateOperation.upsert_points(
                    [qe.Point(id=p.id, vector=p.vector, payload=p.payload) for p in points]
                )
            )
            shard.flush()

    def delete(
        self, name: str, filters: Mapping[str, FilterValue], min_chunk_index: int = 0
    ) -> None:
        flt = _filter(filters, min_chunk_index)
        if flt is None:
            raise ValueError("refusing to delete without a filter")
        with self._lock:
            shard = self._open(name)
            shard.update(qe.UpdateOperation.delete_points_by_filter(flt))
            shard.flush()

    def get_payloads(self, name: str, ids: Sequence[str]) -> dict[str, dict[str, object]]:
        with self._lock:
            records = self._open(name).retrieve(list(ids), with_payload=True, with_vector=False)
        return {str(r.id): dict(r.payload or {}) for r in records}

    def count(self, name: str, filters: Mapping[str, FilterValue] | None = None) -> int:
        with self._lock:
            return self._open(name).count(qe.CountRequest(filter=_filter(filters)))

    def search(
        self,
        name: str,
        vector: Sequence[float],
        *,
        limit: int,
        score_threshold: float | None = None,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[ScoredChunk]:
        check_dims(name, self._spec(name), [vector])
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(list(vector)),
            filter=_filter(filters),
            score_threshold=score_threshold,
            with_payload=True,
        )
        with self._lock:
            hits = self._open(name).query(request)
        return [
            ScoredChunk(id=str(h.id), score=h.score, payload=dict(h.payload or {})) for h in hits
        ]

    def list_ids(self, name: str) -> list[str]:
        ids: list[str] = []
        offset = None
        with self._lock:
            shard = self._open(name)
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
        with self._lock:
            self._open(name)
            return dict(self._meta[name].get("extra") or {})

    def update_metadata(self, name: str, values: Mapping[str, Any]) -> None:
        with self._lock:
            self._open(name)
            meta = dict(self._meta[name])
            meta["extra"] = {**self.get_metadata(name), **values}
            self._write_meta(name, meta)

    def _write_meta(self, name: str, meta: dict[str, Any]) -> None:
        """Atomically replace meta.json (write, fsync, rename)."""
        path = self._root / name / "meta.json"
        tmp = path.with_suffix(".json.tmp")
        with tmp.open("w") as fh:
            json.dump(meta, fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        self._meta[name] = meta

    def ping(self) -> None:
        if not self._root.is_dir():
            raise StoreUnavailable(f"data folder {self._root} is gone")

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()
            self._meta.clear()

    def _spec(self, name: str) -> EmbedderSpec:
        with self._lock:
            self._open(name)
            meta = self._meta[name]
        return EmbedderSpec(model=str(meta["model"]), dim=int(str(meta["dim"])))
