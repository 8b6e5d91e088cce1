"""Every documented ingestion limit holds before the 202 (a 422 naming the document and the
limit, no job, nothing changed), and an ingestion job's progress moves with chunks embedded."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app


@pytest.fixture
def client(settings: Settings) -> TestClient:
    with TestClient(create_app(settings)) as c:
        yield c


def _refused(client: TestClient, settings: Settings, body: dict[str, Any], param: str) -> str:
    """The 422's message, after checking that nothing was stored: no job, no collection."""
    r = client.post("/v1/collections/docs/documents", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_document", param)
    assert list((settings.store.data_dir / "jobs").glob("*.json")) == []
    assert client.get("/v1/collections/docs").status_code == 404
    message: str = error["message"]
    return message


def test_a_document_over_max_document_chars_is_a_422(
    client: TestClient, settings: Settings
) -> None:
    assert settings.collections.max_document_chars == 1_000_000  # the documented default
    big = {"id": "big", "text": "word " * 200_001}  # 1,000,005 characters
    body = {"documents": [{"id": "ok", "text": "Fine."}, big]}
    message = _refused(client, settings, body, "documents[1].text")
    assert "'big' (documents[1]) has 1,000,005 characters" in message
    assert "limit is 1,000,000 (COVRAG_MAX_DOCUMENT_CHARS)" in message


def test_max_documents_per_request_is_a_422(client: TestClient, settings: Settings) -> None:
    assert settings.collections.max_documents_per_request == 1000  # the documented default
    docs = [{"id": f"d{i}", "text": f"Document {i}."} for i in range(1001)]
    message = _refused(client, settings, {"documents": docs}, "documents")
    assert "1,001 documents in one request; the limit is 1,000" in message
    assert "COVRAG_MAX_DOCUMENTS_PER_REQUEST" in message


def test_both_limits_admit_exactly_their_value(settings: Settings) -> None:
    small = settings.updated(collections={"max_document_chars": 40, "max_documents_per_request": 2})
    with TestClient(create_app(small)) as client:
        at_limit = {"documents": [{"id": "a", "text": "y" * 40}, {"id": "b", "text": "z"}]}
        assert client.post("/v1/collections/docs/documents", json=at_limit).status_code == 202
        over = {"documents": [{"id": "a", "text": "y" * 41}]}
        r = client.post("/v1/collections/docs/documents", json=over)
        assert (r.status_code, r.json()["error"]["param"]) == (422, "documents[0].text")
        three = {"documents": [{"id": f"d{i}", "text": "t"} for i in range(3)]}
        r = client.post("/v1/collections/docs/documents", json=three)
        assert (r.status_code, r.json()["error"]["param"]) == (422, "documents")


def test_progress_of_one_large_document_moves_with_chunks_embedded(settings: Settings) -> None:
    """One document of 1,600 chunks: the job reports progress between 0 and 1 while it
    embeds (it stayed 0.0 until the end when progress counted documents)."""
    tuned = settings.updated(
        collections={"chunk_words": 8, "chunk_overlap": 0}, store={"index_threshold": 0}
    )
    text = " ".join(f"Sentence {i} tells of river number {i} here." for i in range(1600))
    with TestClient(create_app(tuned)) as client:
        r = client.post(
            "/v1/collections/docs/documents", json={"documents": [{"id": "big", "text": text}]}
        )
        assert r.status_code == 202, r.text
        seen: list[float] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{r.json()['id']}").json()
            seen.append(job["progress"])
            if job["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.02)
        assert job["status"] == "succeeded", job
        assert job["result"]["chunks_written"] == 1600
        assert seen == sorted(seen) and seen[-1] == 1.0
        assert any(0 < p < 1 for p in seen), seen
