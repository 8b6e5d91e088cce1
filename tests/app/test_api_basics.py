"""The HTTP API without a generator: collections, documents, validation, errors, restarts.

The generator URL points at a closed port here, so these tests also pin the 503 paths.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.app.jobs_helper import ingest

DOCS = {
    "documents": [
        {
            "id": "Eiffel Tower",
            "title": "Eiffel Tower",
            "text": "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889.",
        },
        {
            "id": "AC/DC",
            "text": "AC/DC are an Australian rock band formed in Sydney in 1973.",
            "metadata": {"kind": "band"},
        },
    ]
}


@pytest.fixture
def client(settings: Settings) -> TestClient:
    with TestClient(create_app(settings)) as c:
        yield c


def _error(response, status: int, type_: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    if type_:
        assert body["error"]["type"] == type_
    return body


def test_documents_lifecycle(client: TestClient) -> None:
    assert ingest(client, "docs", DOCS) == {
        "collection": "docs",
        "documents": 2,
        "added": 2,
        "updated": 0,
        "unchanged": 0,
        "chunks_written": 2,
    }
    assert ingest(client, "docs", DOCS)["unchanged"] == 2
    info = client.get("/v1/collections/docs").json()
    assert (info["documents"], info["chunks"]) == (2, 2)
    assert info["embedder"] == {"model": "all-MiniLM-L6-v2", "dim": 384}
    assert info["created_at"]
    assert [c["name"] for c in client.get("/v1/collections").json()["collections"]] == ["docs"]
    r = client.delete("/v1/collections/docs/documents/AC/DC")
    assert r.json() == {"collection": "docs", "doc_id": "AC/DC", "chunks_deleted": 1}
    _error(client.delete("/v1/collections/docs/documents/AC/DC"), 404, "not_found")
    assert client.get("/v1/collections/docs").json()["documents"] == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"question": ""}, "question"),
        ({"question": "   \n "}, "question"),
        ({"question": "x" * 4001}, "question"),
        ({"question": "ok?", "top_k": 0}, "top_k"),
        ({"question": "ok?", "top_k": 101}, "top_k"),
        ({"question": "ok?", "alpha": 1.5}, "alpha"),
        ({"question": "ok?", "max_rounds": 6}, "max_rounds"),
        ({"question": "ok?", "unknown": 1}, "unknown"),
        ({}, "question"),
    ],
)
def test_query_validation(client: TestClient, body: dict, param: str) -> None:
    ingest(client, "docs", DOCS)
    err = _error(client.post("/v1/query", json=body), 422, "invalid_request")
    assert err["error"]["param"] == param


def test_malformed_json_and_unknown_routes(client: TestClient) -> None:
    r = client.post(
        "/v1/query", content=b'{"question": ', headers={"Content-Type": "application/json"}
    )
    _error(r, 400, "invalid_json")
    _error(client.get("/v1/nothing-here"), 404, "not_found")
    _error(
        client.post("/v1/query", json={"question": "Where?", "collection": "missing"}),
        404,
        "not_found",
    )
    _error(client.get("/v1/collections/missing"), 404, "not_found")


def test_bad_documents_change_nothing(client: TestClient) -> None:
    ingest(client, "docs", DOCS)
    bad = [
        {"documents": []},
        {"documents": [{"id": "x", "text": "   "}]},
        {"documents": [{"id": "", "text": "t"}]},
        {"documents": [{"id": "y", "text": "fine"}, {"id": "y", "text": "twice"}]},
        {"documents": [{"text": "no id"}]},
    ]
    for body in bad:
        r = client.post("/v1/collections/docs/documents", json=body)
        assert r.status_code == 422, (body, r.text)
    _error(client.post("/v1/collections/bad..name/documents", json=DOCS), 422)
    assert client.get("/v1/collections/docs").json()["chunks"] == 2
    assert [c["name"] for c in client.get("/v1/collections").json()["collections"]] == ["docs"]


def test_generator_down_the_pod_stays_ready_and_query_fails_fast(
    client: TestClient, settings: Settings
) -> None:
    """The generator URL is a free port nothing listens on (a real refused connect): the pod
    still serves retrieval, ingestion and jobs, so it stays ready and says the generator is
    down (body and /metrics); every query is a 503 with Retry-After within 1 s."""
    ingest(client, "docs", DOCS)
    question = {"question": "When was the Eiffel Tower completed?", "collection": "docs"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "degraded" and "generator" not in body["required"]
    assert body["checks"]["store"] == body["checks"]["embedder"] == "ok"
    assert body["checks"]["generator"].startswith("failed")
    metrics = client.get("/metrics").text
    assert 'covrag_dependency_up{dependency="generator"} 0.0' in metrics
    assert 'covrag_dependency_up{dependency="store"} 1.0' in metrics
    assert "covrag_ready 1.0" in metrics
    assert client.post("/v1/retrieve", json=question).status_code == 200
    for _ in range(settings.generator.breaker_failures + 1):  # before and after breakers open
        start = time.monotonic()
        r = client.post("/v1/query", json=question)
        assert time.monotonic() - start < 1.0
        _error(r, 503, "generator_unavailable")
        assert int(r.headers["Retry-After"]) >= 1
    assert "circuit breaker is open" in r.json()["error"]["message"]
    assert client.get("/healthz").json() == {"status": "ok"}


def test_strict_readiness_requires_the_generator(settings: Settings) -> None:
    """``COVRAG_READY_REQUIRES_WORKERS``: the old all-or-nothing readiness, for those who
    want a pod without a generator out of the Service."""
    strict = settings.updated(server={"ready_requires_workers": True})
    with TestClient(create_app(strict)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable" and "generator" in ready.json()["required"]
        assert "covrag_ready 0.0" in client.get("/metrics").text


def test_request_id_is_echoed(client: TestClient) -> None:
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    assert len(client.get("/healthz").headers["X-Request-ID"]) == 32


def test_documents_survive_a_restart(settings: Settings) -> None:
    with TestClient(create_app(settings)) as first:
        ingest(first, "docs", DOCS)
    with TestClient(create_app(settings)) as second:
        info = second.get("/v1/collections/docs").json()
        assert (info["documents"], info["chunks"]) == (2, 2)
        assert ingest(second, "docs", DOCS)["unchanged"] == 2


def test_bodies_no_route_could_parse_change_nothing(settings: Settings) -> None:
    small = settings.updated(limits={"max_body_bytes": 2048})
    with TestClient(create_app(small)) as c:
        url = "/v1/collections/docs/documents"
        err = _error(c.post(url, content=b"{}", headers={"Content-Type": "text/plain"}), 415)
        assert "application/json" in err["error"]["message"]
        _error(c.post(url, content=b"{}"), 415, "unsupported_media_type")  # no content type
        big = {"documents": [{"id": "big", "text": "x" * 4000}]}
        err = _error(c.post(url, json=big), 413, "payload_too_large")
        assert "2,048-byte" in err["error"]["message"]

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted while read
            yield b'{"documents": [{"id": "big", "text": "'
            yield b"x" * 4000
            yield b'"}]}'

        r = c.post(url, content=chunked(), headers={"Content-Type": "application/json"})
        _error(r, 413, "payload_too_large")
        latin1 = '{"documents": [{"id": "é", "text": "café"}]}'.encode("latin-1")
        r = c.post(url, content=latin1, headers={"Content-Type": "application/json"})
        _error(r, 400, "invalid_encoding")
        assert c.get("/v1/collections").json()["collections"] == []  # nothing was written
        ok = c.post(url, json=DOCS, headers={"Content-Type": "application/json; charset=utf-8"})
        assert ok.status_code == 202, ok.text
