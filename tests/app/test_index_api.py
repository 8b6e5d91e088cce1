"""Index builds over HTTP: on request (202, a job) and after an ingestion past the threshold."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.app.jobs_helper import ingest, wait_job

DOCS = {
    "documents": [
        {"id": f"doc{i}", "text": f"Document number {i} is about topic {i % 3} and nothing else."}
        for i in range(6)
    ]
}


def test_index_job_indexes_the_collection(settings: Settings) -> None:
    with TestClient(create_app(settings.updated(store={"index_threshold": 0}))) as client:
        ingest(client, "docs", DOCS)
        assert client.get("/v1/collections/docs").json()["indexed"] == 0
        r = client.post("/v1/collections/docs/index", json={})
        assert r.status_code == 202, r.text
        assert r.headers["Location"] == f"/v1/jobs/{r.json()['id']}"
        again = client.post("/v1/collections/docs/index", json={})  # the first is still under way
        assert again.status_code == 409 and r.json()["id"] in again.json()["error"]["message"]
        job = wait_job(client, r.json()["id"], timeout_s=120)
        assert job["status"] == "succeeded", job
        assert job["result"]["indexed"] == 6 and job["result"]["replayed"] == 0
        info = client.get("/v1/collections/docs").json()
        assert (info["chunks"], info["indexed"]) == (6, 6)
        assert client.post("/v1/collections/missing/index", json={}).status_code == 404


def test_ingestion_past_the_threshold_starts_an_index_job(settings: Settings) -> None:
    """The first build once the threshold is reached; a rebuild only once the unindexed share
    reaches ``reindex_fraction``, not after every ingestion."""
    tuned = settings.updated(store={"index_threshold": 6, "reindex_fraction": 0.25})

    def ingested(docs: list[dict[str, str]]) -> list[str]:
        r = client.post("/v1/collections/docs/documents", json={"documents": docs})
        job = wait_job(client, r.json()["id"])
        assert job["status"] == "succeeded", job
        return job["messages"]

    def indexed_by(message: str, chunks: int) -> None:
        index_job = message.split()[2]
        assert message == f"index job {index_job} started ({chunks} chunks)"
        assert wait_job(client, index_job, timeout_s=120)["status"] == "succeeded"
        assert client.get("/v1/collections/docs").json()["indexed"] == chunks

    more = [{"id": f"more{i}", "text": f"Another document, number {i}."} for i in range(3)]
    with TestClient(create_app(tuned)) as client:
        (message,) = ingested(DOCS["documents"])
        indexed_by(message, 6)
        assert ingested(more[:1]) == []  # 1 of 7 unindexed: under a quarter
        (message,) = ingested(more[1:])  # 3 of 9
        indexed_by(message, 9)
