"""A Qdrant Edge collection on disk: its folders, its open shard and locks, and crash safety.

Layout: ``<root>/<collection>/meta.json`` (embedder, creation time) beside
``<root>/<collection>/shard`` (segments + WAL); during an index build ``shard.indexing`` is the
copy being built and, after the swap, ``shard.old`` the shard it replaced. Apart from
``EdgeStore``'s API (``retrieval.store.edge``) because these rules — which folder is live, how
a swap is made durable, what a crash leaves and how it is resolved — hold whatever the store
does, and the index child (``edge_index``) needs only the shard config from here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from retrieval.errors import CollectionNotFound, IndexBuildFailed, StoreUnavailable
from retrieval.store.keywords import SPARSE

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
    dim: int,
    hnsw: HnswParams,
    optimizers: qe.EdgeOptimizersConfig | None = None,
    *,
    keywords: bool,
) -> qe.EdgeConfig:
    """A collection's shard config: cosine ``dim``-d vectors, ``hnsw`` for its index builds,
    and with ``keywords`` the keyword vector weighted by Qdrant's IDF. A shard loads only
    with the vectors it was created with, so a collection from before keyword vectors keeps
    being built without them."""
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
        sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
        if keywords
        else None,
        hnsw_config=hnsw.config(),
        optimizers=optimizers,
    )


@dataclass
class IndexBuild:
    """A running index build: its child, and the writes to replay on the built copy."""

    child: subprocess.Popen[str]
    ops: list[qe.UpdateOperation] = field(default_factory=list)
    stopped: str | None = None

    @classmethod
    def begin(
        cls, indexer: Sequence[str], folder: Path, dim: int, hnsw: HnswParams, *, keywords: bool
    ) -> IndexBuild:
        """Copy the collection's shard and ``start`` the build of the copy; raises
        ``IndexBuildFailed`` (no copy left behind) when either cannot be done."""
        try:
            shutil.copytree(folder / SHARD, folder / INDEXING)
            return cls.start(indexer, folder / INDEXING, dim, hnsw, keywords=keywords)
        except OSError as exc:
            shutil.rmtree(folder / INDEXING, ignore_errors=True)
            raise IndexBuildFailed(
                f"cannot start the index build of {folder.name!r}: {exc}"
            ) from exc

    @classmethod
    def start(
        cls, indexer: Sequence[str], copy: Path, dim: int, hnsw: HnswParams, *, keywords: bool
    ) -> IndexBuild:
        """Start the child that optimises ``copy``; it dies with this process (see
        ``edge_index``), so no orphan writes a copy the next start deletes."""
        args = [str(copy), f"--dim={dim}", f"--parent-pid={os.getpid()}"]
        args += ["--keywords"] if keywords else []
        args += [f"--m={hnsw.m}", f"--ef-construct={hnsw.ef_construct}"]
        args += [f"--full-scan-threshold-kb={hnsw.full_scan_threshold_kb}"]
        return cls(
            subprocess.Popen(
                [*indexer, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
        )

    def wait(self, timeout_s: float | None) -> str:
        """Wait for the child without holding the GIL or a lock; its stderr."""
        try:
            return self.child.communicate(timeout=timeout_s)[1]
        except subprocess.TimeoutExpired:
            self.stop(f"still running after the {timeout_s:g} s timeout")
            return self.child.communicate()[1]

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


def fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_leftovers(folder: Path) -> None:
    """While ``shard`` exists it is the live shard and holds every acknowledged write: a
    ``shard.indexing`` (a copy, or a build not swapped in) and a ``shard.old`` (the shard a
    swap replaced) are garbage."""
    if (folder / SHARD).exists():
        shutil.rmtree(folder / INDEXING, ignore_errors=True)
        shutil.rmtree(folder / OLD, ignore_errors=True)


def recover(folder: Path) -> None:
    """Resolve what an index build interrupted by a crash left in ``folder``.

    The rule: ``shard`` is missing only when the crash fell between the swap's two renames;
    ``shard.indexing`` is then complete (the writes made during the build were replayed and
    flushed into it before the first rename, and writes were locked out since), so the swap
    is finished. Then, with ``shard`` in place, the leftovers are dropped.
    """
    shard, indexing = folder / SHARD, folder / INDEXING
    if not shard.exists() and indexing.exists():
        indexing.rename(shard)
        fsync_dir(folder)
    drop_leftovers(folder)


@dataclass(eq=False)
class EdgeCollection:
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
    build: IndexBuild | None = None
    closed: bool = False  # deleted, or the store closed: callers get CollectionNotFound
    calls: threading.RLock = field(default_factory=threading.RLock)
    writes: threading.RLock = field(default_factory=threading.RLock)

    def live(self) -> qe.EdgeShard:
        """The shard, loaded now if need be; call it holding ``calls``."""
        if self.closed:
            raise CollectionNotFound(f"collection {self.folder.name!r} not found")
        if self.shard is None:
            try:
                recover(self.folder)
                self.shard = qe.EdgeShard.load(str(self.folder / SHARD))
            except Exception as exc:  # the binding raises bare Exception
                raise StoreUnavailable(
                    f"cannot open collection {self.folder.name!r}: {exc}"
                ) from exc
        return self.shard


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """Atomically replace ``folder``'s meta.json (write, fsync, rename)."""
    path = folder / "meta.json"
    tmp = path.with_suffix(".json.tmp")
    with tmp.open("w") as fh:
        json.dump(meta, fh)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def close_collection(collection: EdgeCollection) -> None:
    """Flush and close the shard, if open; later callers get ``CollectionNotFound``."""
    if collection.shard is not None:
        collection.shard.flush()
        collection.shard.close()
        collection.shard = None
    collection.closed = True


def swap_in_build(collection: EdgeCollection, ops: Sequence[qe.UpdateOperation]) -> qe.ShardInfo:
    """Replay ``ops`` on the built copy and put it in place of the live shard (holding the
    collection's locks). Once the live shard is closed, the folders are always in a state
    ``recover`` resolves, so a failure from there on is finished by the next call into it."""
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
        fsync_dir(folder)
        shard = qe.EdgeShard.load(str(folder / SHARD))  # not live(): shard.old goes later
    except Exception as exc:  # OSError from a rename, bare Exception from the binding
        raise IndexBuildFailed(f"swap of {folder.name!r}'s index cut short: {exc}") from exc
    collection.shard = shard
    return shard.info()
