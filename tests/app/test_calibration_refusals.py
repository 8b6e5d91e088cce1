"""A calibration refused says the same whichever way it came: the API before its job, the CLI
in process (``--local``) or ``retrieval.calibration.calibrate`` itself; all of them go
through ``check_calibration`` (real Edge store, real embedder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli.commands import cli
from app.config import Settings, get_settings
from app.main import create_app
from app.services import build_embedder, build_store
from retrieval.calibration import calibrate
from retrieval.calibration_set import CalibrationItem
from retrieval.errors import RetrievalError
from tests.app.jobs_helper import ingest, wait_job

pytestmark = pytest.mark.integration

TOWER = {"id": "tower", "text": "The Eiffel Tower in Paris was completed in 1889."}
QUESTION = {"id": "q0", "question": "When was the tower completed?", "answers": ["1889"]}


def _refusals(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    qa: list[dict[str, Any]],
    *,
    generate: int | None = None,
) -> tuple[str, str, str]:
    """The refusal's message from the API, from ``covrag calibrate --local`` with the same
    request, and from ``calibrate`` on the same questions (default_alpha 0.5 throughout)."""
    body: dict[str, Any] = {"generate": generate} if generate else {"qa": qa}
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/collections/c/calibration", json={**body, "default_alpha": 0.5})
        assert r.status_code == 409, r.text
        api = r.json()["error"]["message"]
    qa_file = tmp_path / "qa.jsonl"
    qa_file.write_text("".join(json.dumps(q) + "\n" for q in qa))
    source = ["--generate", str(generate)] if generate else ["--from-qa", str(qa_file)]
    monkeypatch.setenv("COVRAG_DATA_DIR", str(settings.store.data_dir))
    get_settings.cache_clear()
    try:
        args = ["calibrate", "--collection", "c", *source, "--default-alpha", "0.5", "--local"]
        result = CliRunner().invoke(cli, args)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "write questions" not in result.stderr  # refused before any progress bar
    from_cli = result.stderr.strip().removeprefix("covrag: ")
    items = [CalibrationItem(id=q["id"], question=q["question"], answers=("1889",)) for q in qa]
    store = build_store(settings.store)
    try:
        with pytest.raises(RetrievalError) as direct:
            calibrate(
                store, build_embedder(settings.embedder), "c", items, source="t", default_alpha=0.5
            )
    finally:
        store.close()
    return api, from_cli, str(direct.value)


def test_an_empty_collection_is_refused_in_the_same_words_everywhere(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with TestClient(create_app(settings)) as client:
        ingest(client, "c", {"documents": [TOWER]})
        assert client.delete("/v1/collections/c/documents/tower").status_code == 200
    for generate in (None, 1):
        said = _refusals(settings, monkeypatch, tmp_path, [QUESTION], generate=generate)
        assert set(said) == {"collection 'c' is empty: ingest documents before calibrating"}


def test_a_shrinking_calibration_is_refused_in_the_same_words_everywhere(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    questions = [{**QUESTION, "id": f"q{i}"} for i in range(4)]
    with TestClient(create_app(settings)) as client:
        ingest(client, "c", {"documents": [TOWER]})
        r = client.post(
            "/v1/collections/c/calibration", json={"qa": questions, "default_alpha": 0.5}
        )
        assert wait_job(client, r.json()["id"])["status"] == "succeeded"
    api, from_cli, direct = _refusals(settings, monkeypatch, tmp_path, questions[:1])
    assert api == from_cli == direct, (api, from_cli, direct)
    assert api.startswith("this calibration has 1 questions and would replace one of 4")
