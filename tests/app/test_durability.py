"""Acknowledged writes survive a crash: SIGKILL the real server after the 202 or the 200."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from retrieval.types import Document
from tests.app.jobs_helper import ingest, wait_job
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def _server(data_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client]]:
    port = free_port()
    env = {
        **os.environ,
        "COVRAG_DATA_DIR": str(data_dir),
        "COVRAG_PORT": str(port),
        "COVRAG_GENERATOR_URLS": f"http://127.0.0.1:{free_port()}/v1",
    }
    proc = subprocess.Popen([sys.executable, "-m", "app.cli.commands", "serve"], cwd=REPO, env=env)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "server exited during start-up"
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.3)
        yield proc, client
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def test_acknowledged_documents_survive_sigkill(tmp_path: Path) -> None:
    docs = [{"id": f"d{i}", "text": f"Document number {i} is about topic {i}."} for i in range(20)]
    with _server(tmp_path) as (proc, client):
        assert ingest(client, "crash", {"documents": docs})["added"] == 20
        r = client.delete("/v1/collections/crash/documents/d3")
        assert r.status_code == 200, r.text
        proc.send_signal(signal.SIGKILL)  # no shutdown hook runs
        proc.wait(30)
    with _server(tmp_path) as (_, client):
        info = client.get("/v1/collections/crash").json()
        assert (info["documents"], info["chunks"]) == (19, 19)
        again = ingest(client, "crash", {"documents": docs})
        assert again["unchanged"] == 19 and again["added"] == 1


def test_a_job_killed_mid_run_resumes_after_restart(
    tmp_path: Path, wiki_sample: list[Document]
) -> None:
    """202 means the job is stored before it runs: a SIGKILL mid-ingestion loses nothing."""
    body = {"documents": [{"id": d.id, "text": d.text} for d in wiki_sample]}
    with _server(tmp_path) as (proc, client):
        r = client.post("/v1/collections/resume/documents", json=body)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        time.sleep(0.5)  # the job is under way: ~45 articles take several seconds to embed
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] in ("queued", "running")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    with _server(tmp_path) as (_, client):
        job = wait_job(client, job_id)
        assert job["status"] == "succeeded", job
        assert any("resumed after an API restart" in m for m in job["messages"]), job
        assert job["result"]["documents"] == len(wiki_sample)
        info = client.get("/v1/collections/resume").json()
        assert info["documents"] == len(wiki_sample)
