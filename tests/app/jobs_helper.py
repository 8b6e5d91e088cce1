"""Ingestion is a background job: post, then wait for the job like a client would."""

from __future__ import annotations

import time
from typing import Any, Protocol

import httpx


class Client(Protocol):
    def post(self, url: str, **kwargs: Any) -> httpx.Response: ...

    def get(self, url: str, **kwargs: Any) -> httpx.Response: ...


def wait_job(client: Client, job_id: str, timeout_s: float = 600) -> dict[str, Any]:
    """The finished job (succeeded or failed) ``job_id``, polled through the API."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s")


def ingest(client: Client, collection: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST the documents, wait for the job, return its result (the ingestion report)."""
    r = client.post(f"/v1/collections/{collection}/documents", json=body)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "succeeded", job
    result: dict[str, Any] = job["result"]
    return result
