"""``/v1/query`` as server-sent events, against the real vLLM CPU worker.

The disconnect test runs real uvicorn servers: only a real socket closing shows that a client
going away cancels the upstream stream (vLLM aborts a request whose stream is closed).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from app.api.query.protocol import QueryResponse
from app.config import Settings
from app.core.reasoner import plain_answer, whole_words
from app.main import create_app
from retrieval.types import Document
from tests.app.jobs_helper import ingest
from tests.conftest import free_port

pytestmark = pytest.mark.integration

QUESTION = {"question": "Which NASA center controls the Hubble Space Telescope?", "top_k": 2}


def _docs(sample: list[Document]) -> dict[str, Any]:
    return {"documents": [{"id": d.id, "title": d.title, "text": d.text} for d in sample]}


def parse_sse(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


@pytest.fixture
def live_settings(settings: Settings, generator_url: str) -> Settings:
    return settings.updated(generator={"urls": [generator_url]})


@pytest.fixture
def live(live_settings: Settings, wiki_sample: list[Document]) -> Iterator[TestClient]:
    with TestClient(create_app(live_settings)) as client:
        ingest(client, "wiki", _docs(wiki_sample))
        yield client


@pytest.mark.parametrize("how", ["body", "accept"])
def test_stream_tokens_then_round_citations_done(live: TestClient, how: str) -> None:
    body, headers = (
        ({**QUESTION, "stream": True}, {})
        if how == "body"
        else (QUESTION, {"Accept": "text/event-stream"})
    )
    r = live.post("/v1/query", json=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    names = [name for name, _ in events]
    assert names[-3:] == ["round", "citations", "done"]
    assert set(names[:-3]) == {"token"}  # the answer streamed before the round was judged
    done = QueryResponse.model_validate(events[-1][1])
    assert done.request_id == r.headers["X-Request-ID"]
    streamed = "".join(data["text"] for name, data in events if name == "token").strip()
    # the tokens are the reply as decoded; the answer is cut from it
    reply = whole_words(streamed) if done.rounds[0].truncated else streamed
    assert plain_answer(reply, QUESTION["question"]) == done.rounds[0].answer == done.answer
    assert events[-3][1] == done.rounds[0].model_dump(mode="json")
    assert events[-2][1] == [c.model_dump(mode="json") for c in done.citations]


def test_stream_errors_before_the_first_event_keep_their_status(
    live: TestClient, settings: Settings, wiki_sample: list[Document], tmp_path: Path
) -> None:
    r = live.post("/v1/query", json={"question": "  ", "stream": True})
    assert r.status_code == 422 and r.json()["error"]["param"] == "question"
    r = live.post("/v1/query", json={**QUESTION, "collection": "nope", "stream": True})
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    down_settings = settings.updated(store={"data_dir": tmp_path / "down"})
    with TestClient(create_app(down_settings)) as down:  # generator: a closed port
        ingest(down, "wiki", _docs(wiki_sample))
        r = down.post("/v1/query", json={**QUESTION, "stream": True})
    assert r.status_code == 503 and r.json()["error"]["type"] == "generator_unavailable"


class SlowVLLM:
    """Fake vLLM for failure injection: streams a reply one token per 100 ms (a real worker
    finishes too fast to hang up on reliably) and records whether the client hung up."""

    def __init__(self) -> None:
        self.hung_up = threading.Event()
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[str]:
            try:
                for piece in ["word "] * 600:
                    delta = {"choices": [{"delta": {"content": piece}, "finish_reason": None}]}
                    yield f"data: {json.dumps(delta)}\n\n"
                    await asyncio.sleep(0.1)
            except asyncio.CancelledError:
                self.hung_up.set()
                raise

        return StreamingResponse(chunks(), media_type="text/event-stream")


def _serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(600):  # covrag's lifespan loads the embedder first
        if server.started:
            break
        time.sleep(0.1)
    return server, thread, f"http://127.0.0.1:{port}"


def test_client_disconnect_cancels_the_upstream_generation(
    settings: Settings, wiki_sample: list[Document]
) -> None:
    slow = SlowVLLM()
    servers = [_serve(slow.app)]
    try:
        upstream = servers[0][2] + "/v1"
        app = create_app(settings.updated(generator={"urls": [upstream]}))
        servers.append(_serve(app))
        base = servers[1][2]
        with httpx.Client(base_url=base, timeout=120) as http:
            ingest(http, "wiki", _docs(wiki_sample))
        with httpx.stream(
            "POST", f"{base}/v1/query", json={**QUESTION, "stream": True}, timeout=120
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line == "event: token":
                    break  # the answer is streaming: hang up
        assert slow.hung_up.wait(timeout=30), "covrag kept reading from vLLM after the client left"
    finally:
        for server, thread, _ in servers:
            server.should_exit = True
            thread.join(timeout=30)
