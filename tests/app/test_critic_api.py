"""``/v1/query`` with a critic: the packaged features critic deciding real rounds (real vLLM,
real retrieval), and the API's behaviour when the critic worker is down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from critic.features import FeaturesCritic
from retrieval.types import Document
from tests.app.jobs_helper import ingest
from tests.conftest import free_port

pytestmark = pytest.mark.integration

QUESTION = {"question": "Which NASA center controls the Hubble Space Telescope?", "top_k": 2}


def _client(settings: Settings, docs: list[Document]) -> TestClient:
    client = TestClient(create_app(settings))
    client.__enter__()
    body = {"documents": [{"id": d.id, "title": d.title, "text": d.text} for d in docs]}
    ingest(client, "wiki", body)
    return client


@pytest.fixture
def features_api(
    settings: Settings, generator_url: str, wiki_sample: list[Document]
) -> Iterator[TestClient]:
    live = settings.updated(generator={"urls": [generator_url]}, critic={"kind": "features"})
    client = _client(live, wiki_sample)
    yield client
    client.__exit__(None, None, None)


def test_features_critic_decides_every_round(features_api: TestClient) -> None:
    r = features_api.post("/v1/query", json={**QUESTION, "max_rounds": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    tau = FeaturesCritic().tau  # the packaged weights' threshold
    assert (body["critic"], body["tau"]) == ("features", pytest.approx(tau))
    rounds = body["rounds"]
    assert 1 <= len(rounds) <= 2
    # an answer per round that changed the context; a model rewrite for each later round that
    # searched its query (a linked document costs none), and one more when the loop stopped
    # early because the rewrite found nothing new to search
    answered = [
        r_ for r_ in rounds if r_["index"] == 0 or r_["chunks_added"] or r_["chunks_evicted"]
    ]
    stopped_early = rounds[-1]["decision"] == "abstain" and len(rounds) < 2
    rewrites = sum(r_["query_from"] == "model" for r_ in rounds[1:]) + stopped_early
    assert body["llm_calls"] == len(answered) + rewrites
    for r_ in rounds[:-1]:
        assert r_["critic_score"] < tau and r_["decision"] == "search_again"
    last = rounds[-1]
    assert 0.0 <= last["critic_score"] <= 1.0
    if last["critic_score"] >= tau:
        assert last["decision"] == "accept" and body["answer"] == last["answer"]
        assert body["abstained"] is False and body["candidate"] is None
    else:  # not enough, and no round left or nothing new to search: abstain, showing the best
        assert last["decision"] == "abstain"
        assert body["abstained"] is True and body["sufficient"] is False
        best = max(rounds, key=lambda x: x["critic_score"])
        assert body["candidate"]["critic_score"] == best["critic_score"]
        assert body["answer"] == Settings().critic.abstain_answer


@pytest.mark.parametrize("fallback", ["features", "error"])
def test_critic_worker_down(
    settings: Settings, generator_url: str, wiki_sample: list[Document], fallback: str
) -> None:
    down = settings.updated(
        generator={"urls": [generator_url]},
        critic={
            "kind": "cross-encoder",
            "worker_url": f"http://127.0.0.1:{free_port()}",
            "fallback": fallback,
        },
    )
    client = _client(down, wiki_sample)
    try:
        r = client.post("/v1/query", json={**QUESTION, "max_rounds": 1})
    finally:
        client.__exit__(None, None, None)
    if fallback == "features":
        assert r.status_code == 200, r.text
        body = r.json()
        assert any("cross-encoder unavailable" in w for w in body["warnings"])
        assert body["rounds"][0]["critic_score"] is not None  # the features critic judged it
    else:
        assert r.status_code == 503, r.text
        assert "critic" in r.json()["error"]["message"]
        assert r.json()["request_id"] == r.headers["X-Request-ID"]
