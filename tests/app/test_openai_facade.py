"""The OpenAI-compatible façade, driven by the official ``openai`` client against the real
vLLM CPU worker and real retrieval (the client talks through the app's TestClient)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from retrieval.types import Document
from tests.app.jobs_helper import ingest, wait_job

pytestmark = pytest.mark.integration

QUESTION = "Which NASA center controls the Hubble Space Telescope?"


@pytest.fixture
def http(
    settings: Settings, generator_url: str, wiki_sample: list[Document]
) -> Iterator[TestClient]:
    live = settings.updated(generator={"urls": [generator_url]})
    with TestClient(create_app(live)) as http:
        docs = [{"id": d.id, "title": d.title, "text": d.text} for d in wiki_sample]
        ingest(http, "wiki", {"documents": docs})
        yield http


@pytest.fixture
def client(http: TestClient) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{http.base_url}/v1", api_key="unused", http_client=http, max_retries=0
    )


def _covrag(obj: Any) -> dict[str, Any]:
    extra: dict[str, Any] = obj.model_extra["covrag"]
    return extra


def test_models_list_the_collections(client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} == {"covrag", "covrag/wiki"}


def test_completion_with_numbered_sources(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(
        model="covrag/wiki",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": QUESTION},
        ],
        extra_body={"top_k": 2},
    )
    covrag = _covrag(done)
    (choice,) = done.choices
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    answer, _, sources = choice.message.content.partition("\n\nSources:\n")
    assert answer == covrag["answer"]
    lines: dict[str, str] = {}  # one line per document the answer was taken from
    for c in covrag["citations"]:
        if c["cited"]:
            lines.setdefault(c["doc_id"], f"[{c['n']}] {c['title']} ({c['doc_id']})")
    assert sources.splitlines() == list(lines.values())
    assert done.usage.completion_tokens == covrag["usage"]["completion_tokens"] > 0
    assert done.usage.total_tokens > done.usage.prompt_tokens > 0
    assert done.id == f"chatcmpl-{covrag['request_id']}"
    again = client.chat.completions.create(  # the answer cache: spends nothing
        model="covrag/wiki",
        messages=[{"role": "user", "content": QUESTION.lower()}],
        extra_body={"top_k": 2},
    )
    assert _covrag(again)["cached"] is True and covrag["cached"] is False
    assert again.choices[0].message.content == choice.message.content
    assert again.usage.total_tokens == 0 and again.id != done.id


def test_streamed_completion_matches_its_final_answer(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="covrag",  # the default collection
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            extra_body={"top_k": 2},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    covrag = _covrag(chunks[-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    # the answer went out as soon as its round stood, before the final chunk
    assert chunks[1].choices[0].delta.content == covrag["answer"] and len(chunks) >= 3
    answer, _, sources = text.partition("\n\nSources:\n")
    assert answer == covrag["answer"]
    cited = {c["doc_id"] for c in covrag["citations"] if c["cited"]}
    assert len(sources.splitlines()) == len(cited)


def test_earlier_turns_make_the_question_standalone(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(
        model="covrag/wiki",
        messages=[
            {"role": "user", "content": "Tell me about the Hubble Space Telescope."},
            {"role": "assistant", "content": "It is a space telescope launched in 1990."},
            {"role": "user", "content": "Which NASA center controls it?"},
        ],
        extra_body={"top_k": 2},
    )
    covrag = _covrag(done)
    assert covrag["llm_calls"] == 2  # the standalone rewrite, then the answer
    assert covrag["rounds"][0]["query"]  # what was searched: the rewritten question


def test_bad_requests_get_openai_style_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": QUESTION}]
        )
    with pytest.raises(openai.UnprocessableEntityError, match="last message"):
        client.chat.completions.create(
            model="covrag",
            messages=[
                {"role": "user", "content": QUESTION},
                {"role": "assistant", "content": "GSFC."},
            ],
        )
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(
            model="covrag", messages=[{"role": "user", "content": QUESTION}], n=2
        )


def test_a_callers_group_picks_its_threshold_through_the_facade(
    http: TestClient, client: openai.OpenAI, wiki_sample: list[Document]
) -> None:
    """``group`` (sent with extra_body) reaches the calibration as on /v1/query: the answer's
    calibration names the caller's group, and a bad name is a 422 naming the field."""
    qa = [
        {"id": str(i), "question": f"What is {d.title}?", "answers": [d.title], "group": "acme"}
        | {"gold_titles": [d.id]}
        for i, d in enumerate(wiki_sample[:24])
    ]
    r = http.post("/v1/collections/wiki/calibration", json={"qa": qa})
    assert wait_job(http, r.json()["id"], timeout_s=120)["status"] == "succeeded"
    ask = {"role": "user", "content": QUESTION}
    done = client.chat.completions.create(
        model="covrag/wiki", messages=[ask], extra_body={"group": "acme", "alpha": 0.1}
    )
    calibration = _covrag(done)["calibration"]
    assert (calibration["group"], calibration["group_n"]) == ("group:acme", 24)
    with pytest.raises(openai.UnprocessableEntityError, match="group"):
        client.chat.completions.create(
            model="covrag/wiki", messages=[ask], extra_body={"group": "a b"}
        )
