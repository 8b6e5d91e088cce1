"""Query filters over HTTP (issue #25): a metadata key matches where it lives, a list means
"any of", a bad filter is one 422 naming it, and ``evidence`` tells a filter that matched
nothing from a search that found nothing close enough. Real embedder, Edge store, worker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.app.jobs_helper import ingest, wait_job

pytestmark = pytest.mark.integration

HANDBOOK = [
    ("vpn", "IT", 2024, "Connect the VPN client with your badge number to work from home."),
    ("laptops", "IT", 2023, "Laptops are replaced every four years by the IT service desk."),
    ("leave", "HR", 2024, "Employees get twenty-five days of paid leave a year, booked with HR."),
    ("expenses", "Finance", 2024, "Travel expenses are refunded within thirty days."),
]
QUESTION = "How many days of paid leave do employees get?"


@pytest.fixture
def client(settings: Settings, generator_url: str) -> Iterator[TestClient]:
    live = settings.updated(generator={"urls": [generator_url]})
    with TestClient(create_app(live)) as c:
        docs = [
            {"id": i, "text": text, "metadata": {"department": dept, "year": year}}
            for i, dept, year, text in HANDBOOK
        ]
        ingest(c, "handbook", {"documents": docs})
        yield c


def _retrieve(client: TestClient, filters: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {"question": QUESTION, "collection": "handbook", "filters": filters, **extra}
    r = client.post("/v1/retrieve", json=body)
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


def _docs(body: dict[str, Any]) -> set[str]:
    return {c["doc_id"] for c in body["citations"]}


def test_a_bare_key_filters_on_the_document_metadata(client: TestClient) -> None:
    it = _retrieve(client, {"department": "IT"})
    assert _docs(it) == {"vpn", "laptops"}
    assert it["evidence"]["filter_matched_nothing"] is False
    assert _retrieve(client, {"metadata.department": "IT"})["citations"] == it["citations"]
    assert _docs(_retrieve(client, {"doc_id": "leave"})) == {"leave"}  # a field of covrag's


def test_a_list_matches_any_of_its_values(client: TestClient) -> None:
    body = _retrieve(client, {"department": ["HR", "Finance", "IT"], "year": [2024]})
    assert _docs(body) == {"vpn", "leave", "expenses"}


def test_evidence_tells_a_filter_that_matched_nothing_from_no_evidence(
    client: TestClient,
) -> None:
    uncalibrated = _retrieve(client, {"department": "Legal"})
    assert uncalibrated["citations"] == []
    assert uncalibrated["evidence"]["filter_matched_nothing"] is True
    qa = [
        {"id": i, "question": q, "gold_doc_ids": [i]}
        for i, q in [
            ("vpn", "How do I work from home?"),
            ("laptops", "When are laptops replaced?"),
            ("expenses", "When are travel expenses refunded?"),
        ]
    ]
    r = client.post("/v1/collections/handbook/calibration", json={"qa": qa, "default_alpha": 0.5})
    assert wait_job(client, r.json()["id"], timeout_s=120)["status"] == "succeeded"

    nothing = _retrieve(client, {"department": "Legal"})
    assert nothing["threshold"] is not None
    assert nothing["evidence"]["none_cleared"] is True
    assert nothing["evidence"]["filter_matched_nothing"] is True
    far = _retrieve(client, {"department": "Finance"}, question="Who painted the Mona Lisa?")
    assert far["evidence"]["none_cleared"] is True  # the filter matched; nothing was close
    assert far["evidence"]["filter_matched_nothing"] is False
    query = {"question": QUESTION, "collection": "handbook", "filters": {"year": 1999}}
    r = client.post("/v1/query", json=query)
    assert r.status_code == 200, r.text
    assert r.json()["evidence"]["filter_matched_nothing"] is True


@pytest.mark.parametrize(
    ("filters", "param", "says"),
    [
        ({"department": {"name": "IT"}}, "filters.department", "a boolean, or a non-empty list"),
        ({"department": []}, "filters.department", "an empty list matches nothing"),
        ({"year": [2024, 20.5]}, "filters.year", "got 20.5"),
        ({"year": 2**60}, "filters.year", "within ±(2^53 - 1)"),
        ({"department": "IT", "metadata.department": "HR"}, "filters", "both name"),
    ],
)
def test_a_bad_filter_is_one_422_naming_it(
    client: TestClient, filters: dict[str, Any], param: str, says: str
) -> None:
    r = client.post("/v1/retrieve", json={"question": QUESTION, "filters": filters})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["param"] == param and says in err["message"]
    assert "; " not in err["message"]  # one error, not one per type a value might have
