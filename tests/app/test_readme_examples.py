"""The README's own curl example, run as a user would paste it: every command of the block, in
order, with curl against a live server and the real vLLM worker; the answer must be the one the
example's document gives."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from app.config import Settings
from app.main import create_app
from tests.conftest import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
README_URL = "http://127.0.0.1:8080"
#: The block the README opens with this comment: a new collection, a query, its lifecycle.
FIRST_LINE = "# add documents"


def example_commands() -> list[str]:
    """The curl commands of the README's example block: a command runs on while a line ends
    in a backslash or a single-quoted body is still open."""
    text = README.read_text()
    start = text.index(FIRST_LINE)
    commands: list[str] = []
    current = ""
    for line in text[start : text.index("```", start)].splitlines():
        if not current and not line.startswith("curl "):
            continue  # a comment
        current += line[:-1] + " " if line.endswith("\\") else line + "\n"
        if not line.endswith("\\") and current.count("'") % 2 == 0:
            commands.append(current.strip())
            current = ""
    return commands


@pytest.fixture(scope="module")
def url(generator_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A live server with the default settings (critic included), on a free port."""
    settings = Settings(
        store={"data_dir": tmp_path_factory.mktemp("readme")},
        # a loaded CPU worker is slow; slowness is not the test
        generator={"urls": [generator_url], "timeout_s": 400},
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the server failed to start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def _curl(command: str, url: str) -> Any:
    done = subprocess.run(
        ["bash", "-c", command.replace(README_URL, url)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(done.stdout)


def test_the_readme_example_runs_and_answers_from_the_document(url: str) -> None:
    commands = example_commands()
    assert len(commands) >= 6, commands
    job = ""
    outputs: list[Any] = []
    for command in commands:
        if "JOB" in command:  # "until status is succeeded", as the README says
            deadline = time.monotonic() + 300
            while (out := _curl(command.replace("JOB", job), url))["status"] != "succeeded":
                assert out["status"] in ("queued", "running"), out
                assert time.monotonic() < deadline, out
                time.sleep(0.5)
        else:
            out = _curl(command, url)
            job = job or out.get("id", "")
        outputs.append(out)
        if "/v1/query" in command:
            assert "1889" in out["answer"], out
            assert not out["abstained"], out
            assert [c["doc_id"] for c in out["citations"] if c["cited"]] == ["tower"], out
    assert job, "the first command starts an ingestion job"
    assert outputs[-1]["collection"] == "notes", outputs[-1]  # the last one deletes it all
