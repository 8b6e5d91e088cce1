"""CONFLARE's generated calibration against the real vLLM CPU worker."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.core.calibration import NoUsableQuestions, calibrate_generated, rejection, write_questions
from app.main import create_app
from app.services import build_services
from llm import Completion
from retrieval.calibration import calibrate
from retrieval.types import Document
from tests.app.jobs_helper import ingest, wait_job

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def test_rejection_names_why_a_question_is_unusable() -> None:
    passage = "The Eiffel Tower in Paris was completed in 1889."
    assert rejection("When was the Eiffel Tower completed?", "1889", passage) is None
    for question, answer, reason in [
        ("When was the Eiffel Tower completed", "1889", "not a question"),
        ("Why?", "1889", "not a question"),
        ("When was the Eiffel Tower completed?", "the", "no answer"),
        ("When was the Eiffel Tower completed?", "1901", "answer not in the passage"),
        ("Was it completed in 1889?", "1889", "answer given away by the question"),
        ("Where was the tower completed?", "1889 in Berlin", "answer not in the passage"),
    ]:
        assert rejection(question, answer, passage) == reason
    # the passage's own words, reordered, still answer it
    assert rejection("Where is the Eiffel Tower?", "Paris Eiffel Tower", passage) is None


class PassageGenerator:
    """Fake generator (failure injection): replies by the passage it is shown, so each chunk
    meets a known kind of bad reply, which the real model gives only by chance."""

    model = "scripted"

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies = replies

    async def complete(self, messages: list[dict[str, str]], **_: object) -> Completion:
        prompt = messages[-1]["content"]
        reply = next(r for key, r in self.replies.items() if key in prompt)
        return Completion(reply, self.model, 100, 20, "stop")


async def test_rejected_questions_are_counted_by_reason(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = Settings(store={"data_dir": tmp_path_factory.mktemp("rej")}, critic={"kind": "off"})
    services = build_services(settings)
    docs = {
        "tower": "The Eiffel Tower in Paris was completed in 1889.",
        "band": "AC/DC are an Australian rock band formed in Sydney in 1973.",
        "river": "The Thames flows through London to the North Sea.",
        "peak": "Mount Everest is the highest mountain above sea level.",
    }
    replies = {
        "Eiffel": json.dumps({"question": "When was the tower completed?", "answer": "1889"}),
        "AC/DC": json.dumps({"question": "Who formed in Sydney", "answer": "AC/DC"}),
        "Thames": json.dumps({"question": "Where does the Thames flow?", "answer": "Paris"}),
        "Everest": "not JSON at all",
    }
    try:
        services.ingestor.ingest("c", [Document(id=k, text=v) for k, v in docs.items()])
        scripted = PassageGenerator(replies)
        items, rejected = await write_questions(services.store, scripted, "c", 4, seed=0)
        assert [i.question for i in items] == ["When was the tower completed?"]
        assert rejected == Counter(
            {"not a question": 1, "answer not in the passage": 1, "reply not JSON": 1}
        )
        replies["Eiffel"] = replies["AC/DC"]  # now no reply is usable
        with pytest.raises(NoUsableQuestions) as err:
            await calibrate_generated(
                services.store, services.embedder, scripted, "c", 4, seed=0, default_alpha=0.2
            )
        message = str(err.value)
        assert message.startswith("none of the 4 generated questions was usable: 2 not a ")
        assert "1 answer not in the passage" in message and "1 reply not JSON" in message
    finally:
        await services.aclose()


def test_generate_beyond_the_chunk_count_is_refused_before_the_job(settings: Settings) -> None:
    """9 chunks give at most 9 questions: ``generate: 100`` is a 422 saying so, and no job
    (it ran 27 s before failing). A job that runs and keeps no question says why in its error
    (here: the generator is down)."""
    docs = [{"id": f"d{i}", "text": f"Fact number {i} is that {i} is a number."} for i in range(9)]
    with TestClient(create_app(settings)) as client:
        ingest(client, "small", {"documents": docs})
        r = client.post("/v1/collections/small/calibration", json={"generate": 100})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request", "generate")
        assert "it has 9; ask for at most 9" in error["message"]
        assert client.get("/v1/collections/small/calibration").json()["job"] is None
        r = client.post("/v1/collections/small/calibration", json={"generate": 9})
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["id"])
        assert job["status"] == "failed"
        assert job["error"] == (
            "NoUsableQuestions: none of the 9 generated questions was usable: 9 generator error; "
            "ingest more documents (it has 9 chunks, one question each), or calibrate from your "
            "own QA pairs (qa; CLI: --from-qa)"
        )


#: A user's trial collection: four short company-policy pages, one chunk each.
POLICIES = {
    "laptops.md": "# IT equipment\nEvery new employee receives a laptop on the first day. "
    "Laptops are replaced every 4 years. Lost or stolen laptops must be reported to the IT "
    "service desk within 24 hours.\n",
    "leave.md": "# Annual leave policy\nFull-time employees receive 25 days of paid annual "
    "leave per calendar year. Up to 5 unused days may be carried over to the next year; "
    "carried-over days expire on 31 March.\n",
    "remote.md": "# Remote work\nEmployees may work remotely up to 3 days per week after "
    "completing their probation period of 6 months. Remote work from abroad is limited to 20 "
    "working days per year.\n",
    "travel.md": "# Travel expenses\nEmployees travelling for work may claim a daily meal "
    "allowance of EUR 45 within Europe and EUR 70 for intercontinental trips. Hotel bookings "
    "above EUR 180 per night need approval from the department head.\n",
}


def test_a_small_collection_of_own_documents_calibrates_from_generated_questions(
    generator_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The trial that kept 0 of 4 ("4 not a question": the model echoed the instruction)
    keeps at least 3 now, enough for alpha 0.25; asking for the default alpha 0.1, which 4
    chunks can never support, is refused up front saying what would do."""
    settings = Settings(
        store={"data_dir": tmp_path_factory.mktemp("policies")},
        generator={"urls": [generator_url]},
        critic={"kind": "off"},
    )
    docs = [{"id": k, "text": v, "title": v[2:].split("\n")[0]} for k, v in POLICIES.items()]
    with TestClient(create_app(settings)) as client:
        assert ingest(client, "policies", {"documents": docs})["chunks_written"] == 4
        r = client.post("/v1/collections/policies/calibration", json={"generate": 4})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["param"] == "default_alpha"
        for says in ("has 4 chunks", "at least 9 questions", "--from-qa", "at least 0.2"):
            assert says in error["message"], error["message"]
        r = client.post(
            "/v1/collections/policies/calibration", json={"generate": 4, "default_alpha": 0.25}
        )
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["n"] >= 3 and job["result"]["misses"] == 0
    shown = job["result"]["thresholds"]  # the default's threshold is among them
    assert "0.25" in shown and set(shown) <= {"0.2", "0.25"}


async def test_questions_written_from_sampled_chunks(
    generator_url: str, tmp_path_factory: pytest.TempPathFactory, wiki_sample: list[Document]
) -> None:
    settings = Settings(
        store={"data_dir": tmp_path_factory.mktemp("gen")}, generator={"urls": [generator_url]}
    )
    services = build_services(settings)
    try:
        services.ingestor.ingest("wiki", wiki_sample[:12])
        items, rejected = await write_questions(
            services.store, services.generator, "wiki", 6, seed=3
        )
        again, _ = await write_questions(services.store, services.generator, "wiki", 6, seed=3)
        assert len(items) + rejected.total() == 6
        assert len(items) >= 3, rejected  # 1 of 12 such chunks before the worked examples
        assert [i.source_chunk_id for i in items] == [i.source_chunk_id for i in again]
        chunk_ids = set(services.store.list_ids("wiki"))
        payloads = services.store.get_payloads("wiki", [i.source_chunk_id for i in items])
        for item in items:
            assert item.source_chunk_id in chunk_ids
            text = str(payloads[item.source_chunk_id]["text"])
            assert rejection(item.question, item.answers[0], text) is None
        if items:  # each generated question is scored against its own source chunk
            cal = calibrate(
                services.store, services.embedder, "wiki", items, source="gen", default_alpha=0.5
            )
            assert cal.n == len(items) and cal.misses == 0
    finally:
        await services.aclose()
