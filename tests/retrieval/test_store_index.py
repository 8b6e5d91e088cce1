"""``EdgeStore.build_index`` on real Qdrant Edge shards: the index serves the same hits, writes
made while the child builds are kept, crashes and failures leave the collection whole, and a
calibration accounts for what the index misses."""

from __future__ import annotations

import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrieval.calibration import calibrate
from retrieval.calibration_set import CalibrationItem, score_vectors
from retrieval.embed.onnx import OnnxEmbedder
from retrieval.errors import IndexBuildFailed, IndexBuildRunning
from retrieval.retriever import Retriever
from retrieval.store import EdgeStore, HnswParams, QdrantStore
from retrieval.store.base import index_builds
from retrieval.store.edge_shard import INDEXER, INDEXING, OLD, SHARD
from retrieval.types import EmbedderSpec, Point

SPEC = EmbedderSpec("synthetic-384", 384)
N = 2000
#: Searches of an indexed segment go through the graph, not brute force, even at this size.
GRAPH = HnswParams(full_scan_threshold_kb=1)
#: The real indexer, started 3 s late: time to write while the build is under way.
SLOW_INDEXER = ("sh", "-c", 'sleep 3 && exec "$@"', "sh", *INDEXER)


def _vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, SPEC.dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


CORPUS = _vectors(N, 0)


def _id(i: int) -> str:
    return str(uuid.UUID(int=i))


def _points(rows: range, vectors: np.ndarray = CORPUS) -> list[Point]:
    return [
        Point(
            _id(i),
            vectors[i - rows.start].tolist(),
            {"doc_id": f"d{i}", "chunk_index": 0},
            text=f"entry {i} of shelf{i % 50}",
        )
        for i in rows
    ]


def _filled(root: Path, **kwargs: object) -> EdgeStore:
    store = EdgeStore(root, **kwargs)  # type: ignore[arg-type]
    store.create_collection("c", SPEC)
    for start in range(0, N, 500):
        store.upsert("c", _points(range(start, start + 500), CORPUS[start:]))
    return store


def _folders(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "c").iterdir())


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "edge"


def _top1(store: EdgeStore, rows: range) -> list[str]:
    return [store.search("c", CORPUS[i].tolist(), limit=1)[0].id for i in rows]


def _recall(store: EdgeStore, queries: np.ndarray) -> float:
    exact = np.argsort(-(queries @ CORPUS.T), axis=1)[:, :10]
    found = [{h.id for h in store.search("c", q.tolist(), limit=10)} for q in queries]
    return float(
        np.mean([len(f & {_id(i) for i in e}) / 10 for f, e in zip(found, exact, strict=True)])
    )


def test_index_serves_the_same_hits_and_hnsw_ef_reaches_the_search(root: Path) -> None:
    store = _filled(root, hnsw=GRAPH)
    sample = range(0, N, 50)
    assert store.get_collection("c").indexed == 0
    before = _top1(store, sample)
    words = {h.id for h in store.keyword_search("c", "shelf7", CORPUS[0].tolist(), limit=100)}
    assert len(words) == N // 50  # every entry of that shelf, and only those
    report = store.build_index("c")
    assert (report.indexed, report.replayed) == (N, 0) and report.segments >= 1
    info = store.get_collection("c")
    assert (info.chunks, info.indexed) == (N, N)
    assert _top1(store, sample) == before
    # the keyword vectors went through the build too
    assert {
        h.id for h in store.keyword_search("c", "shelf7", CORPUS[0].tolist(), limit=100)
    } == words
    assert _folders(root) == ["meta.json", SHARD]
    store.close()
    # The graph is searched: few candidates per search lose neighbours, many find them all.
    queries = _vectors(30, 1)
    recall = {}
    for ef in (10, 400):
        store = EdgeStore(root, hnsw_ef=ef)
        recall[ef] = _recall(store, queries)
        assert store.get_collection("c").indexed == N  # the index survived the reopen
        store.close()
    assert recall[10] < 0.9 and recall[400] >= 0.97, recall


def test_writes_and_reads_during_the_build_are_served_and_kept(root: Path) -> None:
    store = _filled(root, indexer=SLOW_INDEXER)
    result: dict[str, object] = {}
    builder = threading.Thread(target=lambda: result.update(report=store.build_index("c")))
    builder.start()
    while not (root / "c" / INDEXING).exists():
        time.sleep(0.01)
    store.upsert("c", _points(range(N, N + 100), _vectors(100, 2)))  # new points
    store.delete("c", {"doc_id": "d7"})  # one indexed point
    start = time.perf_counter()
    assert store.search("c", CORPUS[3].tolist(), limit=1)[0].id == _id(3)
    assert time.perf_counter() - start < 1.0  # the child holds no lock and no GIL of ours
    with pytest.raises(IndexBuildRunning):
        store.build_index("c")
    assert builder.is_alive()  # all of the above happened while the child ran
    builder.join()
    report = result["report"]
    assert report.replayed == 2 and report.indexed >= N  # type: ignore[attr-defined]
    store.close()
    store = EdgeStore(root)
    assert store.count("c") == N + 99
    assert store.get_payloads("c", [_id(N + 42), _id(7)]) == {
        _id(N + 42): {"doc_id": f"d{N + 42}", "chunk_index": 0}
    }
    assert _folders(root) == ["meta.json", SHARD]
    store.close()


def test_taking_the_copy_holds_back_only_this_collections_writes(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the shard is copied, searches of it and writes to another collection go on; its
    own writes wait, then land in the live shard and are replayed on the built copy."""
    store = _filled(root)
    store.create_collection("other", SPEC)
    copying, release = threading.Event(), threading.Event()
    copytree = shutil.copytree

    def held_copy(src: Path, dst: Path, *args: Any, **kwargs: Any) -> object:
        if Path(dst).name == INDEXING:  # the build's copy (not one of its recursive calls)
            copying.set()
            release.wait(30)
        return copytree(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copytree", held_copy)

    def started(work: Callable[[], object]) -> threading.Thread:
        thread = threading.Thread(target=work)
        thread.start()
        return thread

    result: dict[str, object] = {}
    builder = started(lambda: result.update(report=store.build_index("c")))
    try:
        assert copying.wait(10)
        found: list[str] = []
        reader = started(lambda: found.append(store.search("c", CORPUS[3].tolist(), limit=1)[0].id))
        other = started(lambda: store.upsert("other", _points(range(1), _vectors(1, 4))))
        writer = started(lambda: store.upsert("c", _points(range(N, N + 10), _vectors(10, 5))))
        for thread in (reader, other):
            thread.join(10)
            assert not thread.is_alive(), "blocked while the shard of 'c' was copied"
        assert found == [_id(3)] and store.count("other") == 1
        assert writer.is_alive()  # its write waits for the copy
    finally:
        release.set()
    writer.join(10)
    builder.join(60)
    assert not writer.is_alive() and not builder.is_alive()
    assert result["report"].replayed == 1  # type: ignore[attr-defined]
    assert store.count("c") == N + 10
    store.close()


def test_a_leftover_copy_is_dropped_on_open(root: Path) -> None:
    _filled(root).close()
    shutil.copytree(root / "c" / SHARD, root / "c" / INDEXING)  # a build the crash cut short
    (root / "c" / INDEXING / "half-written").write_text("x")
    store = EdgeStore(root)
    assert store.count("c") == N
    assert _folders(root) == ["meta.json", SHARD]
    store.close()


def test_a_crash_between_the_renames_is_completed_on_open(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _filled(root)
    rename = Path.rename

    def crash_before_the_second(self: Path, target: Path) -> Path:
        if self.name == INDEXING:
            raise OSError("injected crash between the renames")
        return rename(self, target)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "rename", crash_before_the_second)
        with pytest.raises(IndexBuildFailed, match="injected crash"):
            store.build_index("c")
    assert _folders(root) == ["meta.json", INDEXING, OLD]  # the only crash state without shard
    store.close()
    store = EdgeStore(root)
    info = store.get_collection("c")
    assert (info.chunks, info.indexed) == (N, N)  # the built copy was swapped in
    assert _folders(root) == ["meta.json", SHARD]
    store.close()


@pytest.mark.parametrize(
    ("indexer", "timeout_s", "message"),
    [
        ((sys.executable, "-c", "import sys; sys.exit('injected failure')"), None, "injected"),
        (("/nonexistent/python",), None, "cannot start"),
        ((sys.executable, "-c", "import time; time.sleep(60)"), 1.0, "timeout"),
    ],
    ids=["child-fails", "no-interpreter", "timeout"],
)
def test_a_failed_build_keeps_the_live_shard(
    root: Path, indexer: tuple[str, ...], timeout_s: float | None, message: str
) -> None:
    store = _filled(root, indexer=indexer)
    with pytest.raises(IndexBuildFailed, match=message):
        store.build_index("c", timeout_s=timeout_s)
    assert _folders(root) == ["meta.json", SHARD]
    assert store.search("c", CORPUS[5].tolist(), limit=1)[0].id == _id(5)
    store.upsert("c", _points(range(N, N + 1), _vectors(1, 3)))
    assert store.get_collection("c").chunks == N + 1
    store.close()


def test_deleting_the_collection_stops_its_build(root: Path) -> None:
    store = _filled(root, indexer=(sys.executable, "-c", "import time; time.sleep(60)"))
    errors: list[Exception] = []

    def build() -> None:
        try:
            store.build_index("c")
        except IndexBuildFailed as exc:
            errors.append(exc)

    builder = threading.Thread(target=build)
    builder.start()
    while not (root / "c" / INDEXING).exists():
        time.sleep(0.01)
    store.delete_collection("c")
    builder.join(timeout=10)
    assert "the collection was deleted" in str(errors[0])
    assert store.list_collections() == []
    store.close()


def test_a_qdrant_store_reports_the_server_index() -> None:
    store = QdrantStore(location=":memory:")
    store.create_collection("c", SPEC)
    store.upsert("c", _points(range(10), CORPUS))
    report = store.build_index("c")
    assert (report.indexed, report.replayed) == (0, 0)  # local mode has no index
    assert store.get_collection("c").indexed == 0
    store.close()


def test_calibrating_through_an_index_counts_its_misses_and_a_build_stales_it(
    root: Path,
) -> None:
    """The guarantee needs the threshold search to return every chunk above the threshold, and
    HNSW may not. Scored through a weak index (ef 10), an answer chunk the search misses counts
    as uncovered (∞) where exact scoring gives its similarity; and a build after a calibration
    makes that calibration stale."""
    store = _filled(root, hnsw=GRAPH)
    queries = _vectors(40, 3)
    nearest = np.argmax(queries @ CORPUS.T, axis=1)  # each question's answer: its true top hit
    items = [
        CalibrationItem(id=f"q{i}", question="", source_chunk_id=_id(int(n)))
        for i, n in enumerate(nearest)
    ]
    vectors = queries.tolist()
    exact = score_vectors(store, "c", items, vectors, search_k=1)
    assert all(s.rank == 1 for s in exact)  # brute force: every top hit is found
    retriever = Retriever(store, OnnxEmbedder())
    calibrate(store, retriever.embedder, "c", items[:5], source="test", default_alpha=0.5)
    assert retriever.calibration("c")[1] is False
    store.build_index("c")
    assert index_builds(store, "c") == 1
    assert retriever.calibration("c")[1] is True  # made on exact search: no longer backed
    store.close()

    store = EdgeStore(root, hnsw_ef=10)
    assert index_builds(store, "c") == 1  # kept with the collection
    found = [
        store.search("c", q, limit=1)[0].id == item.source_chunk_id
        for q, item in zip(vectors, items, strict=True)
    ]
    assert not all(found)  # the weak index misses some true top hits
    through = score_vectors(store, "c", items, vectors, search_k=1, approximate=True)
    assert [not s.missed for s in through] == found
    filled_in = score_vectors(store, "c", items, vectors, search_k=1)
    assert [s.score for s in filled_in] == pytest.approx([s.score for s in exact])
    again = Retriever(store, retriever.embedder)
    redone = calibrate(store, again.embedder, "c", items[:5], source="test", default_alpha=0.5)
    assert (redone.indexed_at, redone.index_builds_at) == (N, 1)  # scored through the index
    assert again.calibration("c")[1] is False  # fresh again
    store.close()
