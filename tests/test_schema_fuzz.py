"""Schemathesis against the app's own OpenAPI schema: generated valid and invalid requests to
every operation, each answer checked — no 5xx, and status, headers, content type and body as
the schema documents them.

The real app (embedder, Edge store, the vLLM CPU worker) behind a real uvicorn, with an API key
configured so auth is checked too; a few documents in the default collection let queries reach
the generator. Examples are bounded, and the seed fixed, so CI runs the same cases every time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from schemathesis import GenerationMode

from app.config import Settings
from app.main import create_app
from app.state.auth import ApiKeySpec
from retrieval.filters import payload_key
from tests.app.jobs_helper import ingest
from tests.conftest import free_port

pytestmark = pytest.mark.integration

KEY = "fuzz-key"
CONFIG: dict[str, Any] = {
    "seed": 0,  # with no example database: the same cases on every machine
    "generation": {"mode": "all", "max-examples": 50, "database": "none"},
    "operations": [
        # Each answer waits on the LLM (about a second on CPU): fewer examples.
        {
            "include-path-regex": "^/v1/(query|chat/completions)$",
            "generation": {"max-examples": 10},
        },
    ],
    # A loaded CI machine is slow to generate, and `filter_case` drops some chats.
    "suppress-health-check": ["too_slow", "filter_too_much"],
    "auth": {"openapi": {"HTTPBearer": {"bearer": KEY}, "APIKeyHeader": {"api_key": KEY}}},
}

#: The schema exactly as the app serves it (building the app runs nothing: its lifespan does),
#: loaded at import so that each operation is a test of its own.
schema = schemathesis.openapi.from_dict(
    create_app(Settings()).openapi(), config=schemathesis.Config.from_dict(CONFIG)
)


@schema.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    """Leaves out the schema-valid requests that break a rule JSON Schema cannot state (the
    schema says it in words; the server answers a clear 422): a document id twice in one
    request or page starts outside its text, a chat whose last turn is not the user's
    question, more generated calibration questions than the collection has chunks (every
    collection here has at least one), a calibration too small for its default alpha, two
    filter keys naming one field, and any file upload (a file's type is in its part's file
    name or header, which the schema cannot state: tests/app/test_files_api.py uploads real
    files)."""
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return True
    if case.operation.path == "/v1/collections/{name}/files":
        return False
    body = case.body if isinstance(case.body, dict) else {}
    if case.operation.path == "/v1/collections/{name}/documents":
        docs = [d for d in body.get("documents", []) if isinstance(d, dict)]
        ids = [repr(d.get("id")) for d in docs]
        return len(ids) == len(set(ids)) and all(map(_pages_fit, docs))
    if case.operation.path == "/v1/chat/completions":
        turns = [m for m in body.get("messages", []) if m.get("role") in ("user", "assistant")]
        return bool(turns) and turns[-1]["role"] == "user" and bool(_text(turns[-1]).strip())
    if case.operation.path == "/v1/collections/{name}/calibration":
        qa, generate = body.get("qa"), body.get("generate")
        if isinstance(generate, int | float) and generate > 1:
            return False
        n = len(qa) if isinstance(qa, list) else min(int(generate or 0), len(DOCS))
        return n > 0 and (
            body.get("default_alpha") or Settings().calibration.default_alpha
        ) >= 1 / (n + 1)
    if case.operation.path in ("/v1/query", "/v1/retrieve"):
        keys = [payload_key(k) for k in body.get("filters", {})]
        return len(keys) == len(set(keys))
    return True


def _pages_fit(doc: dict[str, Any]) -> bool:
    """Page starts run from 0 upwards within the text."""
    starts = doc.get("page_starts") or [0]
    text = doc.get("text")
    return (
        isinstance(text, str)
        and starts[0] == 0
        and starts == sorted(starts)
        and starts[-1] <= len(text)
    )


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


#: Small on purpose: a generated calibration asks the LLM once per chunk.
DOCS = [
    {"id": "everest", "text": "Mount Everest is the highest mountain above sea level."},
    {"id": "hubble", "text": "The Hubble Space Telescope was launched into orbit in 1990."},
    {"id": "eiffel", "text": "The Eiffel Tower in Paris was completed in 1889."},
]


@pytest.fixture(scope="module")
def base_url(generator_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One live server for every operation, with the default collection filled."""
    settings = Settings(
        store={"data_dir": tmp_path_factory.mktemp("fuzz")},
        # A loaded CPU worker may take minutes: slowness must not surface as a 504 (a 5xx).
        generator={"urls": [generator_url], "max_tokens": 8, "timeout_s": 400},
        critic={"kind": "off"},
        cache={"answer_ttl_s": 0},
        auth={"api_keys": [ApiKeySpec(name="fuzz", key=KEY)]},
    )
    port = free_port()
    config = uvicorn.Config(create_app(settings), port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:  # the lifespan loads the embedder first
            assert thread.is_alive(), "the server failed to start"
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=60) as client:
            ingest(client, "wiki", {"documents": DOCS})
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@schema.parametrize()
def test_api_conforms_to_its_schema(case: schemathesis.Case, base_url: str) -> None:
    # requests' own read timeout (10 s by default) must outwait the server's generator deadline.
    case.call_and_validate(base_url=base_url, timeout=450)
