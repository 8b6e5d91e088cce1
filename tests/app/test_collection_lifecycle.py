"""A collection's lifecycle over HTTP against the real app (real embedder, Edge store and, for
the cached answer, the real vLLM worker): its documents listed in pages, its stats true after
deletes, and ``DELETE /v1/collections/{name}`` taking everything kept about it."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.app.jobs_helper import ingest, wait_job

DOCS = {
    "documents": [
        {
            "id": "tower",
            "title": "Eiffel Tower",
            "text": "The Eiffel Tower in Paris was completed in 1889.",
        },
        {"id": "band", "text": "AC/DC are an Australian rock band formed in Sydney in 1973."},
    ]
}
QA = {
    "qa": [{"id": "q1", "question": "When was the Eiffel Tower completed?", "answers": ["1889"]}],
    "default_alpha": 0.5,  # n = 1 supports no smaller alpha
}


def _names(client: TestClient) -> tuple[list[str], list[str]]:
    collections = [c["name"] for c in client.get("/v1/collections").json()["collections"]]
    models = [m["id"] for m in client.get("/v1/models").json()["data"]]
    return collections, models


def test_delete_takes_documents_chunks_calibration_and_cached_answers(
    settings: Settings, generator_url: str
) -> None:
    question = {"question": "When was the Eiffel Tower completed?", "collection": "docs"}
    live = settings.updated(generator={"urls": [generator_url]})
    with TestClient(create_app(live)) as client:
        ingest(client, "docs", DOCS)
        ingest(client, "keep", DOCS)
        r = client.post("/v1/collections/docs/calibration", json=QA)
        assert wait_job(client, r.json()["id"])["status"] == "succeeded"
        first = client.post("/v1/query", json=question)
        assert first.status_code == 200, first.text
        assert client.post("/v1/query", json=question).json()["cached"] is True
        assert _names(client) == (["docs", "keep"], ["covrag", "covrag/docs", "covrag/keep"])

        r = client.delete("/v1/collections/docs")
        assert r.status_code == 200, r.text
        assert r.json() == {"collection": "docs", "documents_deleted": 2, "chunks_deleted": 2}
        for path in ("", "/calibration", "/documents"):
            assert client.get(f"/v1/collections/docs{path}").status_code == 404, path
        assert client.delete("/v1/collections/docs").json()["error"]["type"] == "not_found"
        assert client.post("/v1/query", json=question).status_code == 404
        assert _names(client) == (["keep"], ["covrag", "covrag/keep"])
        assert client.get("/v1/collections/keep").json()["documents"] == 2  # untouched

        # A new collection of the same name starts empty-handed: no calibration, no answers.
        ingest(client, "docs", {"documents": [DOCS["documents"][1]]})
        assert client.get("/v1/collections/docs/calibration").json()["calibration"] is None
        again = client.post("/v1/query", json=question).json()
        assert again["cached"] is False and again["calibration"] is None
        assert [c["doc_id"] for c in again["citations"]] == ["band"]
        assert client.delete("/v1/collections/unknown").status_code == 404


def test_delete_is_refused_while_a_job_of_the_collection_runs(settings: Settings) -> None:
    tuned = settings.updated(collections={"chunk_words": 8, "chunk_overlap": 0})
    text = " ".join(f"Sentence {i} tells of river number {i} here." for i in range(800))
    with TestClient(create_app(tuned)) as client:
        r = client.post(
            "/v1/collections/docs/documents", json={"documents": [{"id": "big", "text": text}]}
        )
        job_id = r.json()["id"]
        busy = client.delete("/v1/collections/docs")
        assert busy.status_code == 409, busy.text
        assert busy.json()["error"]["type"] == "conflict"
        assert f"ingest job ({job_id})" in busy.json()["error"]["message"]
        assert wait_job(client, job_id)["status"] == "succeeded"
        assert client.get("/v1/collections/docs").json()["chunks"] == 800
        assert client.delete("/v1/collections/docs").json()["chunks_deleted"] == 800


def test_documents_are_listed_in_pages_with_their_chunk_counts(settings: Settings) -> None:
    tuned = settings.updated(collections={"chunk_words": 8, "chunk_overlap": 0})
    sizes = {f"doc{i}": i + 1 for i in range(5)}  # doc0 has 1 chunk ... doc4 has 5
    docs = [
        {"id": d, "title": d.upper(), "text": " ".join(["eight words of text about one thing"] * n)}
        for d, n in sizes.items()
    ]
    with TestClient(create_app(tuned)) as client:
        ingest(client, "docs", {"documents": docs})
        listed: dict[str, Any] = {}
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            r = client.get("/v1/collections/docs/documents", params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            pages += 1
            assert page["collection"] == "docs" and page["total"] == 5
            assert len(page["documents"]) <= 2
            for d in page["documents"]:
                assert d["id"] not in listed
                listed[d["id"]] = d
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert {d: v["chunks"] for d, v in listed.items()} == sizes
        assert {v["title"] for v in listed.values()} == {d.upper() for d in sizes}
        whole = client.get("/v1/collections/docs/documents").json()
        assert len(whole["documents"]) == 5 and whole["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
    ],
)
def test_bad_page_parameters_are_a_422(settings: Settings, query: str, param: str) -> None:
    with TestClient(create_app(settings)) as client:
        ingest(client, "docs", DOCS)
        r = client.get(f"/v1/collections/docs/documents?{query}")
        assert r.status_code == 422, r.text
        assert r.json()["error"]["param"] == param


def test_stats_stay_true_after_deletes(settings: Settings) -> None:
    """An indexed collection emptied of its documents says 0 indexed chunks, not 6."""
    docs = [{"id": f"d{i}", "text": f"Document {i} is about topic {i}."} for i in range(6)]
    with TestClient(create_app(settings.updated(store={"index_threshold": 0}))) as client:
        ingest(client, "docs", {"documents": docs})
        r = client.post("/v1/collections/docs/index", json={})
        assert wait_job(client, r.json()["id"], timeout_s=120)["status"] == "succeeded"

        def stats() -> tuple[int, int, int]:
            info = client.get("/v1/collections/docs").json()
            return info["documents"], info["chunks"], info["indexed"]

        assert stats() == (6, 6, 6)
        for i in range(2):
            client.delete(f"/v1/collections/docs/documents/d{i}")
        assert stats() == (4, 4, 4)
        for i in range(2, 6):
            client.delete(f"/v1/collections/docs/documents/d{i}")
        assert stats() == (0, 0, 0)
        assert client.get("/v1/collections/docs/documents").json()["documents"] == []
