"""``EdgeStore``: Qdrant Edge (the Qdrant engine in process), one shard per collection.

Layout: ``<root>/<collection>/meta.json`` (embedder, creation time) beside
``<root>/<collection>/shard`` (segments + WAL). Each write is flushed before it returns, so an
acknowledged document survives a crash or restart. A shard's WAL admits one opener, so a
data dir belongs to one process at a time.

Qdrant Edge has no background optimizer: a shard stays one plain (brute-force) segment until
``build_index`` builds its HNSW graph, on a copy in a child process (``edge_index``), and swaps
the copy in. ``shard.indexing`` is that copy; ``shard.old`` the shard it replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import qdrant_edge as qe

from retrieval.errors import (
    CollectionExists,
    CollectionNotFound,
    IndexBuildFailed,
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
from retrieval.types import (
    CollectionInfo,
    EmbedderSpec,
    FilterScalar,
    FilterValue,
    Point,
    ScoredChunk,
)

if TYPE_CHECKING:
    from qdrant_edge import ConditionType

SHARD, INDEXING, OLD = "shard", "shard.indexing", "shard.old"
#: The child that builds the index: ``edge_index``, under this interpreter.
INDEXER = (sys.executable, "-m", "retrieval.store.edge_index")


@dataclass(frozen=True, slots=True)
class HnswParams:
    """How the HNSW graph is built (Qdrant's defaults); searches below
    ``full_scan_threshold_kb`` of vectors per segment stay brute force, which is as fast there."""

    m: int = 16
    ef_construct: int = 100
    full_scan_threshold_kb: int = 10_000

    def config(self) -> qe.HnswIndexConfig:
        return qe.HnswIndexConfig(
            m=self.m,
            ef_construct=self.ef_construct,
            full_scan_threshold=self.full_scan_threshold_kb,
        )


def edge_config(
    dim: int, hnsw: HnswParams, optimizers: qe.EdgeOptimizersConfig | None = None
) -> qe.EdgeConfig:
    """A collection's shard config: cosine ``dim``-d vectors, ``hnsw`` for its index builds."""
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
        hnsw_config=hnsw.config(),
        optimizers=optimizers,
    )


@dataclass
class _Build:
    """A running index build: its child, and the writes to replay on the built copy."""

    child: subprocess.Popen[str]
    ops: list[qe.UpdateOperation] = field(default_factory=list)
    stopped: str | None = None

    def stop(self, reason: str) -> None:
        """Kill the child and wait for it, so nothing writes the copy any more."""
        self.stopped = reason
        self.child.kill()
        self.child.wait()

    def check(self, name: str, stderr: str) -> None:
        """Raise ``IndexBuildFailed`` unless the child built the copy and nothing stopped it."""
        if self.stopped is not None:
            raise IndexBuildFailed(f"index build of {name!r} stopped: {self.stopped}")
        if self.child.returncode != 0:
            raise IndexBuildFailed(
                f"index build of {name!r} failed (exit {self.child.returncode}): {stderr[-2000:]}"
            )


def _fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_leftovers(folder: Path) -> None:
    """While ``shard`` exists it is the live shard and holds every acknowledged write: a
    ``shard.indexing`` (a copy, or a build not swapped in) and a ``shard.old`` (the shard a
    swap replaced) are garbage."""
    if (folder / SHARD).exists():
        shutil.rmtree(folder / INDEXING, ignore_errors=True)
        shutil.rmtree(folder / OLD, ignore_errors=True)


def _recover(folder: Path) -> None:
    """Resolve what an index build interrupted by a crash left in ``folder``.

    The rule: ``shard`` is missing only when the crash fell between the swap's two renames;
    ``shard.indexing`` is then complete (the writes made during the build were replayed and
    flushed into it before the first rename, and writes were locked out since), so the swap
    is finished. Then, with ``shard`` in place, the leftovers are dropped.
    """
    shard, indexing = folder / SHARD, folder / INDEXING
    if not shard.exists() and indexing.exists():
        indexing.rename(shard)
        _fsync_dir(folder)
    _drop_leftovers(folder)


def _match(key: str, value: FilterScalar) -> qe.FieldCondition:
    if isinstance(value, bool):
        # The binding reads a Python bool as the integer it also is, which no boolean payload
        # equals; numpy's bool is no int and arrives as a boolean. The stub names Python's bool.
        exact = qe.MatchValue(np.bool_(value))  # type: ignore[arg-type]
        return qe.FieldCondition(key=key, match=exact)
    return qe.FieldCondition(key=key, match=qe.MatchValue(value))


def _condition(key: str, value: FilterValue) -> ConditionType:
    """One filter item; a list becomes a ``should`` of exact matches (``MatchAny`` takes
    neither booleans nor mixed types)."""
    if isinstance(value, list):
        return qe.Filter(should=[_match(key, v) for v in value])
    return _match(key, value)


def _filter(
    filters: Mapping[str, FilterValue] | None, min_chunk_index: int = 0
) -> qe.Filter | None:
    must = [_condition(key, value) for key, value in (filters or {}).items()]
    if min_chunk_index > 0:
        must.append(qe.FieldCondition(key="chunk_index", range=qe.RangeFloat(gte=min_chunk_index)))
    return qe.Filter(must=must) if must else None


@dataclass(eq=False)
class _Collection:
    """One collection's open shard and its locks.

    The shard binding is not documented as thread-safe (uvicorn calls us from a pool), so
    ``calls`` admits one call into it at a time. ``writes`` is held by each write and by an
    index build from its copy on: searches go on while a shard-sized copy is taken, only this
    collection's writes wait, and no other collection waits at all. Lock order: ``writes``,
    then ``calls``, then the store's own lock.
    """

    folder: Path
    meta: dict[str, Any]
    shard: qe.EdgeShard | None = None  # loaded on first use; None again after a broken swap
    build: _Build | None = None
    closed: bool = False  # deleted, or the store closed: callers get CollectionNotFound
    calls: threading.RLock = field(default_factory=threading.RLock)
    writes: threading.RLock = field(default_factory=threading.RLock)

    def live(self) -> qe.EdgeShard:
        """The shard, loaded now if need be; call it holding ``calls``."""
        if self.closed:
            raise CollectionNotFound(f"collection {self.folder.name!r} not found")
        if self.shard is None:
            try:
                _recover(self.folder)
                self.shard = qe.EdgeShard.load(str(self.folder / SHARD))
            except Exception as exc:  # the binding raises bare Exception
                raise StoreUnavailable(
                    f"cannot open collection {self.folder.name!r}: {exc}"
                ) from exc
        return self.shard


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
        self._collections: dict[str, _Collection] = {}
        self._lock = threading.Lock()  # the dict above, and which collections exist

    # -- collections ----------------------------------------------------------------------
    def create_collection(self, name: str, embedder: EmbedderSpec) -> CollectionInfo:
        check_name(name)
        folder = self._root / name
        with self._lock:
            if (folder / "meta.json").exists():
                raise CollectionExists(f"collection {name!r} exists already")
            shutil.rmtree(folder, ignore_errors=True)  # a half-created leftover
            shard = qe.EdgeShard.create(str(folder / SHARD), edge_config(embedder.dim, self._hnsw))
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
            _write_meta(folder, meta)  # the collection exists once this lands
            self._collections[name] = _Collection(folder, meta, shard)
        return self.get_collection(name)

    def _open(self, name: str) -> _Collection:
        """The collection (its shard is loaded by the first call into it)."""
        with self._lock:
            collection = self._collections.get(name)
            if collection is not None:
                return collection
            meta_path = self._root / check_name(name) / "meta.json"
            if not meta_path.exists():
                raise CollectionNotFound(f"collection {name!r} not found")
            collection = _Collection(meta_path.parent, json.loads(meta_path.read_text()))
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
            documents = shard.count(qe.CountRequest(filter=_filter({"chunk_index": 0})))
        return CollectionInfo(
            name=name,
            embedder=self.embedder(name),
            created_at=datetime.fromisoformat(str(self._open(name).meta["created_at"])),
            chunks=info.points_count,
            documents=documents,
            indexed=min(info.indexed_vectors_count, info.points_count),  # see CollectionInfo
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
                _close(collection)
                self._collections.pop(name, None)  # close() may have emptied it already
                # Drop the marker first: a crash mid-rmtree leaves no half-collection behind.
                (collection.folder / "meta.json").unlink()
                shutil.rmtree(collection.folder)

    # -- points ---------------------------------------------------------------------------
    def upsert(self, name: str, points: Sequence[Point]) -> None:
        if not points:
            return
        check_dims(name, self.embedder(name), [p.vector for p in points])
        self._write(
            name,
            qe.UpdateOperation.upsert_points(
                [qe.Point(id=p.id, vector=p.vector, payload=p.payload) for p in points]
            ),
        )

    def delete(
        self, name: str, filters: Mapping[str, FilterValue], min_chunk_index: int = 0
    ) -> None:
        flt = _filter(filters, min_chunk_index)
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
            return shard.count(qe.CountRequest(filter=_filter(filters)))

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
            filter=_filter(filters),
            score_threshold=score_threshold,
            with_payload=True,
            params=self._search_params,
        )
        with self._shard(name) as shard:
            hits = shard.query(request)
        return [
            ScoredChunk(id=str(h.id), score=h.score, payload=dict(h.payload or {})) for h in hits
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
            filter=_filter(filters),
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
            _write_meta(collection.folder, meta)
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
        raises ``IndexBuildFailed``; the live shard was never touched. ``_recover`` resolves
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
            try:
                shutil.copytree(folder / SHARD, folder / INDEXING)
                child = self._spawn(folder / INDEXING, name)
            except OSError as exc:
                shutil.rmtree(folder / INDEXING, ignore_errors=True)
                raise IndexBuildFailed(f"cannot start the index build of {name!r}: {exc}") from exc
            build = collection.build = _Build(child)
        try:
            stderr = self._wait(build, timeout_s)
            with collection.writes, collection.calls:
                build.check(name, stderr)
                # Counted first: a swap cut short may still leave the index in place (finished
                # by the next call), and a calibration wrongly kept is worse than one redone.
                self.update_metadata(name, {INDEX_BUILDS_KEY: index_builds(self, name) + 1})
                info = _swap(collection, build.ops)
                replayed = len(build.ops)
        finally:
            _drop_leftovers(folder)  # outside the locks: removing a shard-sized folder takes time
            with collection.writes:
                collection.build = None
        return IndexReport(
            seconds=round(time.perf_counter() - start, 3),
            replayed=replayed,
            indexed=info.indexed_vectors_count,
            segments=info.segments_count,
        )

    def _spawn(self, copy: Path, name: str) -> subprocess.Popen[str]:
        """Start the child that optimises ``copy``; it dies with this process (see
        ``edge_index``), so no orphan writes a copy the next start deletes."""
        hnsw = self._hnsw
        args = [str(copy), f"--dim={self.embedder(name).dim}", f"--parent-pid={os.getpid()}"]
        args += [f"--m={hnsw.m}", f"--ef-construct={hnsw.ef_construct}"]
        args += [f"--full-scan-threshold-kb={hnsw.full_scan_threshold_kb}"]
        return subprocess.Popen(
            [*self._indexer, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    @staticmethod
    def _wait(build: _Build, timeout_s: float | None) -> str:
        """Wait for the child without holding the GIL or a lock; its stderr."""
        try:
            return build.child.communicate(timeout=timeout_s)[1]
        except subprocess.TimeoutExpired:
            build.stop(f"still running after the {timeout_s:g} s timeout")
            return build.child.communicate()[1]

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
                    _close(collection)
        with self._lock:
            self._collections.clear()

    def embedder(self, name: str) -> EmbedderSpec:
        meta = self._open(name).meta
        return EmbedderSpec(model=str(meta["model"]), dim=int(str(meta["dim"])))


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """Atomically replace ``folder``'s meta.json (write, fsync, rename)."""
    path = folder / "meta.json"
    tmp = path.with_suffix(".json.tmp")
    with tmp.open("w") as fh:
        json.dump(meta, fh)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _close(collection: _Collection) -> None:
    """Flush and close the shard, if open; later callers get ``CollectionNotFound``."""
    if collection.shard is not None:
        collection.shard.flush()
        collection.shard.close()
        collection.shard = None
    collection.closed = True


def _swap(collection: _Collection, ops: Sequence[qe.UpdateOperation]) -> qe.ShardInfo:
    """Replay ``ops`` on the built copy and put it in place of the live shard (holding the
    collection's locks). Once the live shard is closed, the folders are always in a state
    ``_recover`` resolves, so a failure from there on is finished by the next call into it."""
    folder = collection.folder
    try:
        built = qe.EdgeShard.load(str(folder / INDEXING))
        for op in ops:
            built.update(op)
        built.flush()
        built.close()
    except Exception as exc:  # the binding raises bare Exception
        raise IndexBuildFailed(
            f"cannot replay the writes on {folder.name!r}'s index: {exc}"
        ) from exc
    collection.live().close()
    collection.shard = None  # from here on, the next call loads what the folders hold
    try:
        (folder / SHARD).rename(folder / OLD)
        (folder / INDEXING).rename(folder / SHARD)
        _fsync_dir(folder)
        shard = qe.EdgeShard.load(str(folder / SHARD))  # not live(): shard.old goes later
    except Exception as exc:  # OSError from a rename, bare Exception from the binding
        raise IndexBuildFailed(f"swap of {folder.name!r}'s index cut short: {exc}") from exc
    collection.shard = shard
    return shard.info()
