"""``rerank`` over HTTP (real embedder, Edge store and a real trained reranker; retrieval needs
no generator): without a reranker the request is refused saying how to train one; with one,
a calibration job records its scores and a reranked retrieval thresholds its relevance."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from retrieval.types import Document
from tests.app.jobs_helper import ingest, wait_job
from tests.conftest import free_port


def _docs(sample: list[Document]) -> dict[str, object]:
    return {"documents": [{"id": d.id, "title": d.title, "text": d.text} for d in sample]}


def _qa(sample: list[Document]) -> list[dict[str, object]]:
    return [
        {"id": d.id, "question": " ".join(d.text.split()[:10]) + "?", "gold_doc_ids": [d.id]}
        for d in sample
    ]


#: A question on five ingested articles: every request here that must not reach the reranker.
EIFFEL = {"question": "Where is the Eiffel Tower?", "collection": "wiki"}


def _reranked(client: TestClient, sample: list[Document]) -> httpx.Response:
    """Five articles into ``wiki``, then ``EIFFEL`` reranked."""
    ingest(client, "wiki", _docs(sample[:5]))
    return client.post("/v1/retrieve", json={**EIFFEL, "rerank": True})


def test_rerank_without_a_reranker_says_how_to_train_one(
    settings: Settings, wiki_sample: list[Document]
) -> None:
    with TestClient(create_app(settings)) as client:
        r = _reranked(client, wiki_sample)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["type"] == "reranker_unavailable"
        assert "covrag train-reranker" in r.json()["error"]["message"]
        r = client.post("/v1/retrieve", json={**EIFFEL, "rerank": "maybe"})
        assert r.status_code == 422 and r.json()["error"]["param"] == "rerank", r.text
        assert client.post("/v1/retrieve", json=EIFFEL).status_code == 200


def test_a_broken_reranker_is_logged_and_the_server_serves_without_it(
    settings: Settings,
    wiki_sample: list[Document],
    reranker_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = tmp_path / "reranker"
    shutil.copytree(reranker_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00")  # cut short
    with (
        caplog.at_level(logging.WARNING, logger="covrag"),
        TestClient(create_app(settings.updated(reranker={"dir": broken}))) as client,
    ):
        assert f"no usable reranker at {broken}" in caplog.text
        r = _reranked(client, wiki_sample)
        assert r.status_code == 409 and r.json()["error"]["type"] == "reranker_unavailable"
        assert client.post("/v1/retrieve", json=EIFFEL).status_code == 200


def test_a_reranked_retrieval_over_http(
    settings: Settings, wiki_sample: list[Document], reranker_dir: Path
) -> None:
    with TestClient(create_app(settings.updated(reranker={"dir": reranker_dir}))) as client:
        ingest(client, "wiki", _docs(wiki_sample))
        r = client.post(
            "/v1/collections/wiki/calibration", json={"qa": _qa(wiki_sample), "default_alpha": 0.3}
        )
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["id"])
        assert job["status"] == "succeeded", job
        assert set(job["result"]["rerank_thresholds"]) == {"0.05", "0.1", "0.2", "0.3"}
        kept = client.get("/v1/collections/wiki/calibration").json()["calibration"]["reranked"]
        assert kept["candidates"] == 10 and len(kept["version"]) == 16
        assert set(kept["groups"]) >= {"kind:single"}
        question = _qa(wiki_sample)[0]["question"]
        r = client.post("/v1/retrieve", json={"question": question, "rerank": True})
        assert r.status_code == 200, r.text
        out = r.json()
        relevances = [c["relevance"] for c in out["citations"]]
        assert relevances and all(x >= out["threshold"] for x in relevances)
        assert relevances == sorted(relevances, reverse=True)
        assert out["timings_ms"]["rerank"] > 0
        dense = client.post("/v1/retrieve", json={"question": question}).json()
        assert dense["threshold"] == job["result"]["thresholds"]["0.3"]
        assert out["threshold"] <= job["result"]["rerank_thresholds"]["0.3"]  # a kind's own
        assert all(c["relevance"] is None for c in dense["citations"])
        assert dense["threshold"] != out["threshold"]  # cosine, not relevance


def test_a_reranked_retrieval_through_the_worker_is_the_in_process_one(
    settings: Settings, wiki_sample: list[Document], reranker_dir: Path, reranker_worker_url: str
) -> None:
    """Calibrated with the reranker in process, served by the worker's: one version, one
    scale, the same passages and threshold."""
    question = _qa(wiki_sample)[1]["question"]
    body = {"question": question, "rerank": True, "alpha": 0.2}
    with TestClient(create_app(settings.updated(reranker={"dir": reranker_dir}))) as client:
        ingest(client, "wiki", _docs(wiki_sample))
        r = client.post("/v1/collections/wiki/calibration", json={"qa": _qa(wiki_sample)})
        assert wait_job(client, r.json()["id"])["status"] == "succeeded"
        local = client.post("/v1/retrieve", json=body).json()
    worker = settings.updated(reranker={"url": reranker_worker_url, "timeout_s": 60})
    with TestClient(create_app(worker)) as client:
        r = client.post("/v1/retrieve", json=body)
        assert r.status_code == 200, r.text
        remote = r.json()
        assert client.get("/readyz").json()["checks"]["reranker"] == "ok"
    assert remote["threshold"] == local["threshold"]
    assert [c["chunk_id"] for c in remote["citations"]] == [
        c["chunk_id"] for c in local["citations"]
    ]
    relevance = [c["relevance"] for c in local["citations"]]
    assert [c["relevance"] for c in remote["citations"]] == pytest.approx(relevance, abs=1e-4)
    assert remote["coverage_guaranteed"] == local["coverage_guaranteed"]


def test_a_reranker_worker_that_is_down_is_a_503_and_the_rest_is_served(
    settings: Settings, wiki_sample: list[Document]
) -> None:
    """A closed port stands in for the worker (failure injection)."""
    down = settings.updated(reranker={"url": f"http://127.0.0.1:{free_port()}"})
    with TestClient(create_app(down)) as client:
        r = _reranked(client, wiki_sample)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["type"] == "reranker_worker_unavailable"
        assert r.headers["Retry-After"] == "5"
        assert client.post("/v1/retrieve", json=EIFFEL).status_code == 200
        ready = client.get("/readyz")  # a worker: reported, but this pod still serves
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["reranker"].startswith("failed: RerankerDown")
        assert "reranker" not in ready.json()["required"]
