"""The ``covrag`` CLI as a client (issue #25): commands talk to a real ``covrag serve`` process;
in-process work only behind ``--local``, refused while a server holds the data dir; every error
one line, the traceback only with ``--debug``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from app.cli.commands import cli
from app.cli.remote import BATCH_DOCUMENTS, batches
from app.config import Settings, get_settings
from app.state.datalock import LOCK_FILE
from retrieval.types import Document
from tests import documents as files
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
KEY = "cli-key"
DOCS = [
    {
        "id": "tower",
        "title": "Eiffel Tower",
        "text": "The Eiffel Tower in Paris was completed in 1889.",
    },
    {"id": "everest", "text": "Mount Everest is the highest mountain above sea level."},
    {"id": "hubble", "text": "The Hubble Space Telescope was launched into orbit in 1990."},
]


@dataclass(frozen=True)
class Served:
    url: str
    pid: int
    data_dir: Path


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _lock(data_dir: Path, pid: int, url: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / LOCK_FILE).write_text(json.dumps({"pid": pid, "url": url}))


@pytest.fixture(scope="module")
def served(generator_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``covrag serve`` in a process of its own, with an API key, on a data dir where a killed
    server left a stale lock; once stopped (SIGTERM), its own lock must be gone."""
    data = tmp_path_factory.mktemp("served")
    _lock(data, _dead_pid(), "http://127.0.0.1:1")
    port = free_port()
    env = {
        **os.environ,
        "COVRAG_DATA_DIR": str(data),
        "COVRAG_GENERATOR_URLS": generator_url,
        "COVRAG_CRITIC": "off",
        "COVRAG_MAX_TOKENS": "16",
        "COVRAG_API_KEYS": json.dumps([{"name": "cli", "key": KEY}]),
        "COVRAG_LOG_LEVEL": "warning",
    }
    log = (data / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli.commands", "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (data / "serve.log").read_text()
            assert time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield Served(url=url, pid=server.pid, data_dir=data)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
        log.close()
    assert not (data / LOCK_FILE).exists()


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    yield CliRunner()
    get_settings.cache_clear()


def _env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(f"COVRAG_{name.upper()}", value)
    get_settings.cache_clear()


def _client_of(monkeypatch: pytest.MonkeyPatch, served: Served) -> None:
    _env(monkeypatch, url=served.url, api_key=KEY, data_dir=str(served.data_dir))


def _json(result: Result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _one_line(result: Result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("covrag: ")
    return line


@pytest.mark.integration
def test_serve_holds_the_data_dir_and_local_work_is_refused(
    served: Served, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = json.loads((served.data_dir / LOCK_FILE).read_text())
    assert lock == {"pid": served.pid, "url": served.url}  # the stale lock was taken over
    _client_of(monkeypatch, served)
    (tmp_path / "docs.jsonl").write_text(json.dumps(DOCS[0]) + "\n")

    for args in (["ingest", str(tmp_path / "docs.jsonl")], ["ask", "Why?"], ["index", "wiki"]):
        line = _one_line(runner.invoke(cli, [*args, "--local"]), 2)
        assert f"pid {served.pid}" in line and served.url in line, line


@pytest.mark.integration
def test_ingest_calibrate_ask_index_jobs_collections_over_http(
    served: Served, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _client_of(monkeypatch, served)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS))

    ingested = runner.invoke(cli, ["ingest", str(docs), "--collection", "notes"])
    report = _json(ingested)
    assert (report["collection"], report["added"], report["chunks_written"]) == ("notes", 3, 3)
    assert "ingest → notes" in ingested.stderr and "100%" in ingested.stderr  # the progress bar
    [job_id] = set(re.findall(r"job ([0-9a-f]{32})", ingested.stderr))
    job = _json(runner.invoke(cli, ["jobs", job_id, "--wait"]))
    assert (job["kind"], job["status"], job["progress"]) == ("ingest", "succeeded", 1.0)

    # The server's 409 for an uncalibrated collection, as one line that says what to run.
    refused = _one_line(
        runner.invoke(cli, ["ask", "When?", "--collection", "notes", "--alpha", "0.2"]), 2
    )
    assert "`covrag calibrate --collection notes" in refused and "(HTTP 409)" in refused

    qa = tmp_path / "qa.jsonl"
    row = {"question": "When was the Eiffel Tower completed?", "answers": ["1889"]}
    qa.write_text("".join(json.dumps({**row, "id": f"q{i}"}) + "\n" for i in range(4)))
    args = ["calibrate", "--collection", "notes", "--from-qa", str(qa), "--default-alpha", "0.2"]
    calibration = _json(runner.invoke(cli, args))
    assert (calibration["n"], calibration["version"], calibration["default_alpha"]) == (4, 1, 0.2)

    answer = _json(runner.invoke(cli, ["ask", row["question"], "--collection", "notes"]))
    assert answer["alpha"] == 0.2 and answer["threshold"] is not None
    assert "tower" in {c["doc_id"] for c in answer["citations"]}

    assert _json(runner.invoke(cli, ["index", "notes"]))["indexed"] == 3
    [notes] = _json(runner.invoke(cli, ["collections"]))["collections"]
    assert (notes["name"], notes["documents"], notes["chunks"], notes["indexed"]) == (
        "notes",
        3,
        3,
        3,
    )

    monkeypatch.delenv("COVRAG_API_KEY")
    get_settings.cache_clear()
    assert "missing API key" in _one_line(runner.invoke(cli, ["collections"]), 2)
    _client_of(monkeypatch, served)

    deleted = _json(runner.invoke(cli, ["collections", "delete", "notes", "--yes"]))
    assert (deleted["documents_deleted"], deleted["chunks_deleted"]) == (3, 3)
    assert _json(runner.invoke(cli, ["collections"]))["collections"] == []


@pytest.mark.integration
def test_ingest_files_over_http_then_query_cites_the_page(
    served: Served,
    runner: CliRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    wiki_docs: list[Document],
) -> None:
    """A 50-page PDF, a DOCX and a web page through `covrag ingest` (parsed by the CLI, sent
    with their pages), then a question answerable from page 37 only, end to end."""
    _client_of(monkeypatch, served)
    guide, manual, page = tmp_path / "guide.pdf", tmp_path / "manual.docx", tmp_path / "sk.html"
    guide.write_bytes(files.field_guide(wiki_docs))
    manual.write_bytes(files.manual_docx())
    page.write_bytes(files.saved_web_page())
    args = ["ingest", str(guide), str(manual), str(page), "--collection", "manuals"]
    report = _json(runner.invoke(cli, args))
    assert (report["added"], report["chunks_written"]) == (3, 52)
    assert _json(runner.invoke(cli, args))["unchanged"] == 3  # the same files again: no change

    question = {"question": "What is the highest mountain on Earth?", "collection": "manuals"}
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=served.url, headers=auth, timeout=600) as http:
        top = http.post("/v1/retrieve", json=question).json()["citations"][0]
        assert (top["doc_id"], top["source"], top["page"]) == (str(guide), str(guide), 37)
        answer = http.post("/v1/query", json={**question, "top_k": 1}).json()
    [cited] = answer["citations"]
    assert (cited["source"], cited["page"], cited["title"]) == (str(guide), 37, "Field guide")
    assert "Everest" in cited["text"] and answer["answer"].strip()

    locked = tmp_path / "locked.pdf"
    locked.write_bytes(files.encrypted(files.pdf([("Secret", "Codes.")]), "pw"))
    line = _one_line(runner.invoke(cli, ["ingest", str(locked), "--collection", "manuals"]), 2)
    assert line.startswith(f"covrag: {locked}: the PDF is encrypted")


@pytest.mark.parametrize("debug", [False, True])
def test_an_unreachable_server_is_one_line_and_debug_shows_the_traceback(debug: bool) -> None:
    """Run as a user runs it (its own process), so nothing catches what the CLI lets out."""
    url = f"http://127.0.0.1:{free_port()}"
    args = [*(["--debug"] if debug else []), "--url", url, "ask", "Why?"]
    done = subprocess.run(
        [sys.executable, "-m", "app.cli.commands", *args], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stdout == ""
    if debug:
        assert "Traceback" in done.stderr and "ServerUnreachable" in done.stderr
    else:
        assert done.stderr == (
            f"covrag: cannot reach the server at {url} — start it with `covrag serve` "
            "or pass --local\n"
        )


def test_a_live_lock_refuses_local_work_and_a_stale_one_is_taken_over(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    _env(monkeypatch, data_dir=str(data))
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps(DOCS[0]) + "\n")

    _lock(data, os.getppid(), "http://127.0.0.1:9")  # alive, and not us
    line = _one_line(runner.invoke(cli, ["ingest", str(docs), "--local"]), 2)
    assert f"pid {os.getppid()}" in line and "http://127.0.0.1:9" in line
    refused = runner.invoke(cli, ["serve", "--port", "1"])  # nor does a second server start
    assert refused.exit_code == 2 and f"pid {os.getppid()}" in refused.stderr

    _lock(data, _dead_pid(), "http://127.0.0.1:9")
    assert _json(runner.invoke(cli, ["ingest", str(docs), "--local"]))["added"] == 1


def test_local_names_a_missing_data_dir_instead_of_creating_it(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(monkeypatch, data_dir=str(tmp_path / "nowhere"))
    line = _one_line(runner.invoke(cli, ["ask", "Why?", "--local"]), 2)
    assert f"no data dir at {tmp_path / 'nowhere'}" in line
    assert not (tmp_path / "nowhere").exists()


def test_the_data_dir_is_resolved_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings(store={"data_dir": Path("d")}).store.data_dir == tmp_path.resolve() / "d"


def test_large_ingestions_are_posted_in_batches() -> None:
    docs = [Document(id=str(i), text="x") for i in range(2 * BATCH_DOCUMENTS + 1)]
    assert [len(b) for b in batches(docs)] == [BATCH_DOCUMENTS, BATCH_DOCUMENTS, 1]
    big = [Document(id=str(i), text="x" * 2_000_000) for i in range(3)]
    assert [len(b) for b in batches(big)] == [1, 1, 1]
