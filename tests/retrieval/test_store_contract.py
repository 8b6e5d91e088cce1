"""The ``VectorStore`` contract, run against both backends (Edge and qdrant-client local mode)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from retrieval.errors import (
    CollectionExists,
    CollectionNotFound,
    EmbedderMismatch,
    InvalidCollectionName,
    KeywordsUnavailable,
)
from retrieval.store import EdgeStore, QdrantStore, VectorStore
from retrieval.store.edge_shard import SHARD, HnswParams, edge_config, write_meta
from retrieval.types import EmbedderSpec, FilterValue, Point

SPEC = EmbedderSpec(model="test-model", dim=8)


def _unit(rng: np.random.Generator) -> list[float]:
    v = rng.normal(size=SPEC.dim)
    return (v / np.linalg.norm(v)).tolist()


def _points(n: int, seed: int = 0) -> list[Point]:
    rng = np.random.default_rng(seed)
    return [
        Point(
            id=f"00000000-0000-0000-0000-{i:012d}",
            vector=_unit(rng),
            payload={
                "doc_id": f"doc{i % 4}",
                "chunk_index": i // 4,
                "text": f"t{i}",
                "title": f"T{i % 4}",
            },
        )
        for i in range(n)
    ]


def test_create_get_list_delete(store: VectorStore) -> None:
    info = store.create_collection("c1", SPEC)
    assert (info.name, info.embedder, info.chunks, info.documents) == ("c1", SPEC, 0, 0)
    assert [c.name for c in store.list_collections()] == ["c1"]
    with pytest.raises(CollectionExists):
        store.create_collection("c1", SPEC)
    store.delete_collection("c1")
    assert store.list_collections() == []
    with pytest.raises(CollectionNotFound):
        store.get_collection("c1")


def test_unknown_and_invalid_names(store: VectorStore) -> None:
    with pytest.raises(CollectionNotFound):
        store.search("nope", [0.0] * SPEC.dim, limit=3)
    with pytest.raises(InvalidCollectionName):
        store.create_collection("../escape", SPEC)


def test_search_is_exact_cosine_best_first(store: VectorStore) -> None:
    store.create_collection("c", SPEC)
    points = _points(20)
    store.upsert("c", points)
    query = np.asarray(points[3].vector)
    hits = store.search("c", query.tolist(), limit=5)
    expected = sorted(points, key=lambda p: -float(np.dot(query, p.vector)))[:5]
    assert [h.id for h in hits] == [p.id for p in expected]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].payload["text"] == "t3"


def test_threshold_limit_and_filter(store: VectorStore) -> None:
    store.create_collection("c", SPEC)
    points = _points(40, seed=1)
    store.upsert("c", points)
    query = points[0].vector
    all_hits = store.search("c", query, limit=40)
    cut = (all_hits[6].score + all_hits[7].score) / 2  # ties at the cut are float32 rounding
    above = store.search("c", query, limit=40, score_threshold=cut)
    assert [h.id for h in above] == [h.id for h in all_hits[:7]]
    assert len(store.search("c", query, limit=3, score_threshold=-1.0)) == 3
    only = store.search("c", query, limit=40, filters={"doc_id": "doc2"})
    assert only and {h.payload["doc_id"] for h in only} == {"doc2"}
    assert len(only) == 10


def test_counts_payloads_and_filtered_delete(store: VectorStore) -> None:
    store.create_collection("c", SPEC)
    points = _points(12)
    store.upsert("c", points)
    info = store.get_collection("c")
    assert (info.chunks, info.documents) == (12, 4)
    assert store.count("c", {"doc_id": "doc1"}) == 3
    got = store.get_payloads("c", [points[0].id, "00000000-0000-0000-0000-999999999999"])
    assert list(got) == [points[0].id] and got[points[0].id]["text"] == "t0"
    store.delete("c", {"doc_id": "doc1"}, min_chunk_index=1)
    assert store.count("c", {"doc_id": "doc1"}) == 1
    store.delete("c", {"doc_id": "doc1"})
    assert store.count("c", {"doc_id": "doc1"}) == 0
    assert store.count("c") == 9


def test_scroll_pages_in_id_order_with_a_filter(store: VectorStore) -> None:
    store.create_collection("c", SPEC)
    points = _points(12)
    store.upsert("c", points)
    first, after = store.scroll("c", limit=3, filters={"chunk_index": 0})
    assert list(first) == [p.id for p in points[:3]]
    assert first[points[0].id]["doc_id"] == "doc0"
    rest, end = store.scroll("c", limit=3, offset=after, filters={"chunk_index": 0})
    assert list(rest) == [points[3].id] and end is None
    every, _ = store.scroll("c", limit=100)
    assert len(every) == 12


def test_upsert_replaces_by_id(store: VectorStore) -> None:
    store.create_collection("c", SPEC)
    p = _points(1)[0]
    store.upsert("c", [p])
    store.upsert("c", [Point(id=p.id, vector=p.vector, payload={**p.payload, "text": "new"})])
    assert store.count("c") == 1
    assert store.get_payloads("c", [p.id])[p.id]["text"] == "new"


def test_refuses_other_dimensions(store: VectorStore) -> None:
    store.create_collection("c", SPEC)
    with pytest.raises(EmbedderMismatch):
        store.upsert(
            "c", [Point(id="00000000-0000-0000-0000-000000000001", vector=[1.0] * 4, payload={})]
        )
    with pytest.raises(EmbedderMismatch):
        store.search("c", [1.0] * 4, limit=1)


def test_edge_persists_across_reopen(tmp_path: Path) -> None:
    first = EdgeStore(tmp_path / "edge")
    first.create_collection("c", SPEC)
    first.upsert("c", _points(10))
    first.close()
    again = EdgeStore(tmp_path / "edge")
    info = again.get_collection("c")
    assert (info.chunks, info.embedder) == (10, SPEC)
    again.close()


def test_ids_and_metadata(store: VectorStore) -> None:
    store.create_collection("c", SPEC)
    points = _points(7)
    store.upsert("c", points)
    assert store.list_ids("c") == sorted(p.id for p in points)
    assert store.get_metadata("c") == {}
    store.update_metadata("c", {"changes": 3, "calibration": {"scores": [0.1, "inf"]}})
    store.update_metadata("c", {"changes": 5})
    assert store.get_metadata("c") == {"changes": 5, "calibration": {"scores": [0.1, "inf"]}}
    assert store.get_collection("c").embedder == SPEC  # covrag's own record is untouched
    with pytest.raises(CollectionNotFound):
        store.get_metadata("missing")


def test_edge_metadata_persists(tmp_path: Path) -> None:
    first = EdgeStore(tmp_path / "edge")
    first.create_collection("c", SPEC)
    first.update_metadata("c", {"changes": 9})
    first.close()
    again = EdgeStore(tmp_path / "edge")
    assert again.get_metadata("c") == {"changes": 9}
    again.close()


def test_concurrent_calls_on_two_collections(store: VectorStore) -> None:
    """The server calls the store from a thread pool: writes, searches and reads of two
    collections, interleaved across threads, all land and all answer."""
    for name in ("a", "b"):
        store.create_collection(name, SPEC)
    batches = [_points(40, seed)[seed * 4 : seed * 4 + 4] for seed in range(10)]
    probe = _points(1, 99)[0]
    store.upsert("b", [probe])

    def work(i: int) -> None:
        name = "ab"[i % 2]
        store.upsert(name, batches[i])
        assert store.search("b", probe.vector, limit=1)[0].id == probe.id
        assert store.get_collection(name).chunks >= 1
        store.count(name, {"doc_id": "doc0"})

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(work, range(10)))  # re-raises a failed call
    ids = {p.id for batch in batches[0::2] for p in batch}
    assert set(store.list_ids("a")) == ids
    assert store.get_collection("b").chunks == 1 + sum(len(b) for b in batches[1::2])


def test_filters_on_metadata_lists_nested_paths_and_arrays(store: VectorStore) -> None:
    """A filter item matches a payload path (dotted into the metadata); a list value matches
    any of its values, of whatever types; an array in the payload matches if any element does.
    Search, count and delete agree."""
    store.create_collection("c", SPEC)
    rng = np.random.default_rng(2)
    departments = ["IT", "HR", "Sales", "IT", "HR", "IT"]
    points = [
        Point(
            id=f"00000000-0000-0000-0000-{i:012d}",
            vector=_unit(rng),
            payload={
                "doc_id": f"doc{i}",
                "chunk_index": 0,
                "text": f"t{i}",
                "title": f"T{i}",
                "metadata": {
                    "department": dept,
                    "year": 2020 + i % 2,
                    "public": i < 3,
                    "tags": ["a", f"t{i}"],
                    "team": {"lead": f"L{i % 3}"},
                },
            },
        )
        for i, dept in enumerate(departments)
    ]
    store.upsert("c", points)

    def docs(filters: dict[str, FilterValue]) -> set[str]:
        hits = store.search("c", points[0].vector, limit=10, filters=filters)
        assert store.count("c", filters) == len(hits)
        return {h.payload["doc_id"] for h in hits}

    assert docs({"metadata.department": "IT"}) == {"doc0", "doc3", "doc5"}
    assert docs({"metadata.department": ["HR", "Sales"]}) == {"doc1", "doc2", "doc4"}
    assert docs({"metadata.department": ["IT"], "metadata.year": 2021}) == {"doc3", "doc5"}
    assert docs({"metadata.year": [2021, "2020"], "metadata.public": True}) == {"doc1"}
    assert docs({"metadata.team.lead": "L2"}) == {"doc2", "doc5"}
    assert docs({"metadata.tags": "t4"}) == {"doc4"}
    assert docs({"metadata.tags": ["t1", "t2"], "doc_id": ["doc2", "doc3"]}) == {"doc2"}
    assert docs({"metadata.department": "Legal"}) == set()
    assert docs({"department": "IT"}) == set()  # a payload path: the store does not guess
    store.delete("c", {"metadata.department": ["HR", "Sales"]})
    assert store.count("c") == 3 and docs({"metadata.department": "IT"}) == {"doc0", "doc3", "doc5"}


WORDS = [
    "The surveyor Wojciechowski mapped the crevasse field in July.",
    "Glaciers move slowly downhill under their own weight.",
    "The expedition ship carried dogs, sledges and coal.",
    "Crevasses open where a glacier flows over a bump in its bed.",
]


def _texts(seed: int = 3) -> list[Point]:
    rng = np.random.default_rng(seed)
    return [
        Point(
            id=f"00000000-0000-0000-0000-{i:012d}",
            vector=_unit(rng),
            payload={"doc_id": f"doc{i}", "chunk_index": 0, "text": text, "title": f"T{i}"},
            text=text,
        )
        for i, text in enumerate(WORDS)
    ]


def test_keyword_search_ranks_by_bm25_and_scores_by_cosine(store: VectorStore) -> None:
    store.create_collection("c", SPEC)
    points = _texts()
    store.upsert("c", points)
    query = _unit(np.random.default_rng(9))
    hits = store.keyword_search("c", "Who was Wojciechowski?", query, limit=3)
    assert [h.id for h in hits] == [points[0].id]  # the one text holding the word
    assert hits[0].score == pytest.approx(float(np.dot(query, points[0].vector)), abs=1e-5)
    # words are stemmed ("crevasses" finds "crevasse"); texts without the word do not come back
    both = store.keyword_search("c", "crevasses", query, limit=4)
    assert {h.id for h in both} == {points[0].id, points[3].id}
    filtered = store.keyword_search("c", "crevasses", query, limit=4, filters={"doc_id": "doc3"})
    assert [h.id for h in filtered] == [points[3].id]
    assert store.keyword_search("c", "the of and", query, limit=4) == []  # stopwords only
    with pytest.raises(EmbedderMismatch):
        store.keyword_search("c", "glacier", [0.0] * (SPEC.dim + 1), limit=1)


def test_a_collection_from_before_keywords_says_so(tmp_path: Path) -> None:
    """A collection an earlier covrag made (no keyword vectors) still serves dense search;
    a keyword search names the collection and what to do."""
    root = tmp_path / "edge"
    folder = root / "old"
    qe.EdgeShard.create(
        str(folder / SHARD), edge_config(SPEC.dim, HnswParams(), keywords=False)
    ).close()
    write_meta(folder, {"model": SPEC.model, "dim": SPEC.dim, "created_at": "2025-01-01T00:00:00"})
    local = QdrantClient(path=str(tmp_path / "qdrant"))
    local.create_collection(
        "old",
        vectors_config=qm.VectorParams(size=SPEC.dim, distance=qm.Distance.COSINE),
        metadata={"covrag_model": SPEC.model, "covrag_dim": SPEC.dim, "created_at": "2025-01-01"},
    )
    local.close()
    qdrant = QdrantStore(location=str(tmp_path / "qdrant"))
    for store in (EdgeStore(root), qdrant):
        store.upsert("old", _texts())  # dense vectors only: nothing to refuse
        assert len(store.search("old", _texts()[0].vector, limit=2)) == 2
        with pytest.raises(KeywordsUnavailable, match="'old' was created before keyword"):
            store.keyword_search("old", "glacier", _texts()[0].vector, limit=2)
        store.close()
