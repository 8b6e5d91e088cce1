"""The README's quick start, against the real vLLM worker: the demo collection calibrated from
the shipped calibration set, and the README's example question answered right."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.cli import DEMO_CALIBRATION, QUICKSTART_QUESTION
from app.config import Settings
from app.main import create_app
from retrieval.types import Document
from tests.app.jobs_helper import ingest, wait_job

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_quick_start_asks_the_question_the_cli_prints() -> None:
    assert QUICKSTART_QUESTION in README.read_text()


@pytest.mark.integration
def test_the_quick_start_question_is_answered_right(
    settings: Settings, generator_url: str, wiki_docs: list[Document]
) -> None:
    rows = [json.loads(line) for line in DEMO_CALIBRATION.read_text().splitlines()]
    gold = {t for r in rows for t in r["gold_titles"]} | {"Hubble Space Telescope"}
    docs = [d for d in wiki_docs if d.id in gold] + wiki_docs[::200]
    present = {d.id for d in docs}
    qa = [r for r in rows if set(r["gold_titles"]) <= present]
    with TestClient(
        create_app(
            settings.model_copy(update={"generator_urls": [generator_url], "critic": "features"})
        )
    ) as client:
        documents = [{"id": d.id, "title": d.title, "text": d.text} for d in docs]
        ingest(client, "wiki", {"documents": documents})
        job = client.post("/v1/collections/wiki/calibration", json={"qa": qa}).json()
        assert wait_job(client, job["id"], timeout_s=120)["status"] == "succeeded"
        r = client.post("/v1/query", json={"question": QUICKSTART_QUESTION})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["alpha"] == 0.1 and body["threshold"] is not None
    assert body["coverage_guaranteed"] is True
    assert re.search(r"\bgoddard\b", body["answer"], re.IGNORECASE), body["answer"]
    cited = [c["doc_id"] for c in body["citations"] if c["cited"]]
    assert cited == ["Hubble Space Telescope"]
