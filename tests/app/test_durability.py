"""Acknowledged documents survive a crash: SIGKILL the real server right after the 200."""

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
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], cwd=REPO, env=env)
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
        r = client.post("/v1/collections/crash/documents", json={"documents": docs})
        assert r.status_code == 200, r.text
        r = client.delete("/v1/collections/crash/documents/d3")
        assert r.status_code == 200, r.text
        proc.send_signal(signal.SIGKILL)  # no shutdown hook runs
        proc.wait(30)
    with _server(tmp_path) as (_, client):
        info = client.get("/v1/collections/crash").json()
        assert (info["documents"], info["chunks"]) == (19, 19)
        again = client.post("/v1/collections/crash/documents", json={"documents": docs})
        assert again.json()["unchanged"] == 19 and again.json()["added"] == 1
