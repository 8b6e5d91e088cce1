"""``search: hybrid`` over HTTP (real embedder, real Edge store; retrieval needs no
generator): the field reaches the retriever, is validated, and a collection from before
keyword vectors answers 409 saying what to do."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import qdrant_edge as qe
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from retrieval.store.edge_shard import SHARD, HnswParams, edge_config, write_meta
from retrieval.types import Document
from tests.app.jobs_helper import ingest
from tests.retrieval.test_hybrid import LETTER, QUESTION


@pytest.fixture
def client(settings: Settings, wiki_sample: list[Document]) -> Iterator[TestClient]:
    # a collection as an earlier covrag made it: dense vectors only
    old = settings.store.data_dir / "edge" / "old"
    config = edge_config(384, HnswParams(), keywords=False)
    qe.EdgeShard.create(str(old / SHARD), config).close()
    write_meta(old, {"model": "all-MiniLM-L6-v2", "dim": 384, "created_at": "2025-01-01T00:00:00"})
    with TestClient(create_app(settings)) as c:
        docs = [{"id": d.id, "title": d.title, "text": d.text} for d in [*wiki_sample, LETTER]]
        ingest(c, "wiki", {"documents": docs})
        yield c


def test_hybrid_retrieval_over_http(client: TestClient) -> None:
    body = {"question": QUESTION, "collection": "wiki", "top_k": 3}
    hybrid = client.post("/v1/retrieve", json={**body, "search": "hybrid"})
    assert hybrid.status_code == 200, hybrid.text
    cited = [c["doc_id"] for c in hybrid.json()["citations"]]
    assert "letter" in cited and len(cited) == 3
    # the dense-only case, where the surname ranks low, is tests/retrieval/test_hybrid.py's
    assert client.post("/v1/retrieve", json=body).status_code == 200  # COVRAG_SEARCH: dense


def test_search_is_validated_and_an_old_collection_says_what_to_do(client: TestClient) -> None:
    r = client.post("/v1/retrieve", json={"question": QUESTION, "search": "sparse"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "search", r.text
    old = {"question": QUESTION, "collection": "old", "search": "hybrid"}
    r = client.post("/v1/retrieve", json=old)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["type"] == "keywords_unavailable"
    assert "'old' was created before keyword search" in r.json()["error"]["message"]
    assert client.post("/v1/retrieve", json={**old, "search": "dense"}).status_code == 200
