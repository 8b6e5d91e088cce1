"""The conformal filter over HTTP: calibration jobs, /v1/retrieve, α validation, staleness.

Real embedder, real Edge store; no generator is needed (QA calibration and retrieval only).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from retrieval.kinds import KindClassifier
from retrieval.types import Document
from tests.app.jobs_helper import ingest, wait_job

DEV_QA = Path(__file__).resolve().parents[2] / "data" / "qa" / "dev.jsonl"


def _dev_rows() -> list[dict]:
    return [json.loads(line) for line in DEV_QA.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def dev_docs(wiki_docs: list[Document]) -> list[Document]:
    """The gold summaries of 60 single-hop dev questions, plus 60 other summaries."""
    gold = {r["gold_titles"][0] for r in _dev_rows() if r["type"] == "single"}
    picked = [d for d in wiki_docs if d.id in gold][:60]
    return picked + [d for d in wiki_docs[::97] if d.id not in gold][:60]


def _qa(dev_docs: list[Document]) -> list[dict]:
    present = {d.id for d in dev_docs}
    return [
        {k: r[k] for k in ("id", "question", "answers", "gold_titles", "type")}
        for r in _dev_rows()
        if r["type"] == "single" and r["gold_titles"][0] in present
    ]


@pytest.fixture
def client(settings: Settings, dev_docs: list[Document]) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        docs = [{"id": d.id, "title": d.title, "text": d.text} for d in dev_docs]
        ingest(c, "wiki", {"documents": docs})
        yield c


def _calibrate(client: TestClient, body: dict) -> dict:
    r = client.post("/v1/collections/wiki/calibration", json=body)
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == f"/v1/jobs/{r.json()['id']}"
    return wait_job(client, r.json()["id"], timeout_s=120)


def test_calibrate_then_retrieve_through_the_threshold(
    client: TestClient, dev_docs: list[Document]
) -> None:
    qa = _qa(dev_docs)
    assert len(qa) >= 40
    r = client.post(
        "/v1/retrieve", json={"question": "What is the capital of Somaliland?", "alpha": 0.1}
    )
    assert r.status_code == 409 and r.json()["error"]["type"] == "not_calibrated"
    assert "covrag calibrate" in r.json()["error"]["message"]

    job = _calibrate(client, {"qa": qa, "default_alpha": 0.2})
    assert job["status"] == "succeeded", job
    assert job["result"]["n"] == len(qa) and job["result"]["version"] == 1
    status = client.get("/v1/collections/wiki/calibration").json()
    cal = status["calibration"]
    assert (cal["n"], cal["version"], cal["stale"], cal["default_alpha"]) == (
        len(qa),
        1,
        False,
        0.2,
    )
    assert cal["min_alpha"] == pytest.approx(1 / (len(qa) + 1))
    assert cal["indexed"] == 0  # scored on exact search: the collection has no index
    # single-hop questions only: no second hop is calibrated at any α
    assert cal["multi_hop"] == {
        "n": 0,
        "link_from": 5,
        "links": {"0.05": None, "0.1": None, "0.2": None},
    }
    assert job["result"]["multi_hop_links"] == {"0.05": None, "0.1": None, "0.2": None}
    assert status["job"]["id"] == job["id"]

    question = qa[0]["question"]
    default = client.post("/v1/retrieve", json={"question": question}).json()
    assert default["alpha"] == 0.2 and default["coverage_target"] == pytest.approx(0.8)
    strict = client.post("/v1/retrieve", json={"question": question, "alpha": 0.05}).json()
    loose = client.post("/v1/retrieve", json={"question": question, "alpha": 0.3}).json()
    # smaller α ⇒ larger q̂ ⇒ lower similarity threshold ⇒ at least as many chunks
    assert strict["threshold"] <= default["threshold"] <= loose["threshold"]
    assert strict["evidence"]["passed"] >= loose["evidence"]["passed"]
    single = cal["groups"]["kind:single"]
    # a question counts in each kind of its set
    in_sets = sum(len(KindClassifier.load().groups(item["question"])) for item in qa)
    assert sum(g["n"] for k, g in cal["groups"].items() if k.startswith("kind:")) == in_sets
    for body in (strict, default, loose):
        assert body["calibration"] == {
            "n": len(qa),
            "version": 1,
            "stale": False,
            "group": "kind:single",  # the question's kind: its own threshold (Mondrian)
            "group_n": single["n"],
            "fallback": False,
            "groups": list(KindClassifier.load().groups(question)),
            "links": None,  # not possibly multi-hop: no linked documents
            "scale": "cosine",  # COVRAG_CONFORMAL_SCORE's default
        }
        assert "kind:bridge" not in body["calibration"]["groups"]
        assert all(c["score"] >= body["threshold"] for c in body["citations"])
        assert body["evidence"]["none_cleared"] == (body["evidence"]["passed"] == 0)
        assert body["coverage_guaranteed"] == (not body["evidence"]["budget_cut"])
        assert set(body["timings_ms"]) == {"filter", "embed", "search", "rerank", "total"}
        assert body["timings_ms"]["rerank"] is None  # not reranked


def test_a_callers_group_gets_its_own_threshold_or_says_it_fell_back(
    client: TestClient, dev_docs: list[Document]
) -> None:
    qa = _qa(dev_docs)
    tagged = [{**q, "group": "acme"} if i < 12 else q for i, q in enumerate(qa)]
    assert _calibrate(client, {"qa": tagged})["status"] == "succeeded"
    groups = client.get("/v1/collections/wiki/calibration").json()["calibration"]["groups"]
    assert groups["group:acme"]["n"] == 12
    assert groups["group:acme"]["thresholds"]["0.05"] is None  # 12 < 1/0.05 - 1
    question = {"question": qa[0]["question"], "group": "acme"}
    own = client.post("/v1/retrieve", json={**question, "alpha": 0.1}).json()
    assert own["calibration"]["group"] == "group:acme" and own["calibration"]["group_n"] == 12
    assert own["calibration"]["fallback"] is False
    assert own["threshold"] == pytest.approx(groups["group:acme"]["thresholds"]["0.1"])
    pooled = client.post("/v1/retrieve", json={**question, "alpha": 0.05}).json()
    assert pooled["calibration"]["fallback"] is True and pooled["coverage_guaranteed"] is False
    for bad in ("", "a b", "x" * 65):
        r = client.post("/v1/retrieve", json={**question, "group": bad})
        assert r.status_code == 422 and "group" in r.text


def test_budget_cut_drops_the_guarantee(client: TestClient, dev_docs: list[Document]) -> None:
    assert _calibrate(client, {"qa": _qa(dev_docs)})["status"] == "succeeded"
    body = client.post(
        "/v1/retrieve", json={"question": _qa(dev_docs)[0]["question"], "alpha": 0.05, "top_k": 1}
    ).json()
    assert body["evidence"]["budget"] == 1
    if body["evidence"]["budget_cut"]:
        assert body["coverage_guaranteed"] is False and len(body["citations"]) == 1
    else:  # only one chunk cleared the threshold: nothing was cut
        assert body["coverage_guaranteed"] is True


def test_alpha_validation(client: TestClient, dev_docs: list[Document]) -> None:
    qa = _qa(dev_docs)[:19]
    assert _calibrate(client, {"qa": qa})["status"] == "succeeded"
    r = client.post("/v1/retrieve", json={"question": "Where?", "alpha": 0.04})  # < 1/20
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["param"] == "alpha" and "[0.05, 1)" in err["message"]
    assert (
        client.post("/v1/retrieve", json={"question": "Where?", "alpha": 0.05}).status_code == 200
    )
    for bad in (0, 1, -0.1, 1.5):
        r = client.post("/v1/retrieve", json={"question": "Where?", "alpha": bad})
        assert r.status_code == 422 and r.json()["error"]["param"] == "alpha"


def test_calibration_request_validation(client: TestClient) -> None:
    assert client.post("/v1/collections/wiki/calibration", json={}).status_code == 422
    both = {"qa": [{"id": "a", "question": "q?", "answers": ["x"]}], "generate": 3}
    assert client.post("/v1/collections/wiki/calibration", json=both).status_code == 422
    no_gold = {"qa": [{"id": "a", "question": "q?"}]}
    assert client.post("/v1/collections/wiki/calibration", json=no_gold).status_code == 422
    r = client.post("/v1/collections/nope/calibration", json={"generate": 3})
    assert r.status_code == 404
    ingest(client, "empty", {"documents": [{"id": "x", "text": "t"}]})
    client.delete("/v1/collections/empty/documents/x")
    r = client.post("/v1/collections/empty/calibration", json={"generate": 3})
    assert r.status_code == 409 and r.json()["error"]["type"] == "collection_empty"
    assert client.get("/v1/jobs/unknown").status_code == 404
    assert client.get("/v1/collections/wiki/calibration").json()["calibration"] is None


def test_a_default_alpha_the_calibration_cannot_support_is_refused(
    client: TestClient, dev_docs: list[Document]
) -> None:
    """One question supports alpha >= 1/2 only: with default_alpha 0.1 every query without
    alpha would be refused, so the calibration is, before any job (issue #25)."""
    for body in ({"qa": _qa(dev_docs)[:1]}, {"generate": 1}):
        r = client.post("/v1/collections/wiki/calibration", json={**body, "default_alpha": 0.1})
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["param"] == "default_alpha"
        assert "1/2 = 0.5" in err["message"] and "at least 9 questions" in err["message"]
    assert client.get("/v1/collections/wiki/calibration").json() == {
        "collection": "wiki",
        "calibration": None,
        "drift": None,
        "job": None,
    }


def test_a_much_smaller_calibration_needs_replace_smaller(
    client: TestClient, dev_docs: list[Document]
) -> None:
    qa = _qa(dev_docs)
    assert _calibrate(client, {"qa": qa})["status"] == "succeeded"
    small = {"qa": qa[:5], "default_alpha": 0.2}
    r = client.post("/v1/collections/wiki/calibration", json=small)
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert (err["type"], err["param"]) == ("conflict", "replace_smaller")
    assert f"would replace one of {len(qa)}" in err["message"]
    assert client.get("/v1/collections/wiki/calibration").json()["calibration"]["n"] == len(qa)
    job = _calibrate(client, {**small, "replace_smaller": True})
    assert (job["status"], job["result"]["n"], job["result"]["version"]) == ("succeeded", 5, 2)


def test_earlier_calibrations_are_listed_and_restorable(
    client: TestClient, dev_docs: list[Document]
) -> None:
    qa = _qa(dev_docs)
    question = {"question": qa[0]["question"]}
    assert client.get("/v1/collections/wiki/calibration/versions").json()["versions"] == []
    assert _calibrate(client, {"qa": qa, "default_alpha": 0.2})["status"] == "succeeded"
    small = {"qa": qa[:5], "default_alpha": 0.3, "replace_smaller": True}
    assert _calibrate(client, small)["status"] == "succeeded"
    assert client.post("/v1/retrieve", json=question).json()["calibration"]["n"] == 5

    versions = client.get("/v1/collections/wiki/calibration/versions").json()["versions"]
    assert [(v["version"], v["current"], v["n"], v["default_alpha"]) for v in versions] == [
        (2, True, 5, 0.3),
        (1, False, len(qa), 0.2),
    ]
    assert versions[1]["min_alpha"] == pytest.approx(1 / (len(qa) + 1))
    assert versions[1]["created_at"] < versions[0]["created_at"]

    r = client.post("/v1/collections/wiki/calibration/restore", json={"version": 1})
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["n"], r.json()["stale"]) == (1, len(qa), False)
    body = client.post("/v1/retrieve", json=question).json()
    assert (body["calibration"]["n"], body["calibration"]["version"]) == (len(qa), 1)
    assert body["calibration"]["stale"] is False
    assert body["alpha"] == 0.2
    versions = client.get("/v1/collections/wiki/calibration/versions").json()["versions"]
    assert [(v["version"], v["current"]) for v in versions] == [(2, False), (1, True)]

    r = client.post("/v1/collections/wiki/calibration/restore", json={"version": 7})
    assert r.status_code == 404 and r.json()["error"]["param"] == "version"
    r = client.get("/v1/collections/nope/calibration/versions")
    assert r.status_code == 404


def test_stale_after_changes_and_persisted_across_restart(
    settings: Settings, client: TestClient, dev_docs: list[Document], wiki_docs: list[Document]
) -> None:
    assert _calibrate(client, {"qa": _qa(dev_docs)})["status"] == "succeeded"
    assert _calibrate(client, {"qa": _qa(dev_docs)})["result"]["version"] == 2
    present = {d.id for d in dev_docs}
    extra = [d for d in wiki_docs[5::89] if d.id not in present][:20]  # > 10 % of the chunks
    docs = [{"id": d.id, "title": d.title, "text": d.text} for d in extra]
    ingest(client, "wiki", {"documents": docs})
    assert client.get("/v1/collections/wiki/calibration").json()["calibration"]["stale"] is True
    body = client.post("/v1/retrieve", json={"question": _qa(dev_docs)[0]["question"]}).json()
    assert body["calibration"]["stale"] is True and body["coverage_guaranteed"] is False
    client.__exit__(None, None, None)
    with TestClient(create_app(settings)) as again:
        cal = again.get("/v1/collections/wiki/calibration").json()["calibration"]
        assert (cal["version"], cal["stale"]) == (2, True)


def test_readiness_follows_the_required_calibration(
    settings: Settings, generator_url: str, dev_docs: list[Document], wiki_docs: list[Document]
) -> None:
    """With COVRAG_REQUIRE_CALIBRATION, /readyz is 503 until the default collection is
    calibrated, 200 once it is, and 503 again when changes make the calibration stale."""
    strict = settings.updated(
        server={"require_calibration": True}, generator={"urls": [generator_url]}
    )
    with TestClient(create_app(strict)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["calibration"].startswith("failed")
        ingest(client, "wiki", {"documents": [{"id": d.id, "text": d.text} for d in dev_docs]})
        assert "no calibration" in client.get("/readyz").json()["checks"]["calibration"]
        assert _calibrate(client, {"qa": _qa(dev_docs)})["status"] == "succeeded"
        assert client.get("/readyz").status_code == 200
        present = {d.id for d in dev_docs}
        extra = [d for d in wiki_docs[5::89] if d.id not in present][:20]
        ingest(client, "wiki", {"documents": [{"id": d.id, "text": d.text} for d in extra]})
        r = client.get("/readyz")
        assert r.status_code == 503 and "stale" in r.json()["checks"]["calibration"]


def test_the_shift_watch_flags_questions_unlike_the_calibration_set(
    settings: Settings, dev_docs: list[Document]
) -> None:
    """A window of questions about nothing in the collection (top-1 similarity far below the
    calibration questions'): the watch flags drift, /v1/retrieve and GET …/calibration say
    so, /metrics exports it, and a recalibration starts a fresh watch."""
    watched = settings.updated(calibration={"drift_window": 10})
    with TestClient(create_app(watched)) as client:
        docs = [{"id": d.id, "title": d.title, "text": d.text} for d in dev_docs]
        ingest(client, "wiki", {"documents": docs})
        qa = _qa(dev_docs)
        assert _calibrate(client, {"qa": qa})["status"] == "succeeded"
        status = client.get("/v1/collections/wiki/calibration").json()
        assert status["drift"] is None  # no question yet
        for question in qa[:5]:  # like the calibration set: no alarm
            body = client.post("/v1/retrieve", json={"question": question["question"]}).json()
            assert body["warnings"] == []
        drift = client.get("/v1/collections/wiki/calibration").json()["drift"]
        assert drift["requests"] == 5 and drift["drifted"] is False
        filtered = {"question": "zqx vlorp", "filters": {"title": "Somaliland"}}
        client.post("/v1/retrieve", json=filtered)  # filtered: not the calibration's kind
        nonsense = [f"Qwzx plorv {i} frindle?" for i in range(15)]
        replies = [client.post("/v1/retrieve", json={"question": q}).json() for q in nonsense]
        drift = client.get("/v1/collections/wiki/calibration").json()["drift"]
        assert drift["requests"] == 20 and drift["drifted"] is True
        # the first block mixes 5 of each; the second, all nonsense, alarms
        assert drift["drifted_at"] == 20 and drift["signal"] == "top_similarity"
        assert drift["p_value"] < drift["level"]
        assert drift["live_none_cleared"] >= drift["predicted_none_cleared"]
        assert any("drift" in w for w in replies[-1]["warnings"])
        assert not any("drift" in w for w in replies[-2]["warnings"])  # before the alarm
        metrics = client.get("/metrics").text
        assert 'covrag_drift_flagged{collection="wiki"} 1.0' in metrics
        assert _calibrate(client, {"qa": qa})["status"] == "succeeded"
        client.post("/v1/retrieve", json={"question": qa[0]["question"]})
        fresh = client.get("/v1/collections/wiki/calibration").json()["drift"]
        assert fresh["requests"] == 1 and fresh["drifted"] is False


def test_the_relative_scale_over_http(settings: Settings, dev_docs: list[Document]) -> None:
    """COVRAG_CONFORMAL_SCORE=relative: a question that can only be single-hop is thresholded
    on its chunks' shares, calibrated on the questions served so; the response says so."""
    relative = settings.updated(calibration={"score": "relative"})
    with TestClient(create_app(relative)) as client:
        docs = [{"id": d.id, "title": d.title, "text": d.text} for d in dev_docs]
        ingest(client, "wiki", {"documents": docs})
        qa = _qa(dev_docs)
        job = _calibrate(client, {"qa": qa, "default_alpha": 0.2})
        assert job["status"] == "succeeded" and set(job["result"]["relative_thresholds"]) >= {"0.1"}
        cal = client.get("/v1/collections/wiki/calibration").json()["calibration"]
        served = cal["relative"]["groups"]["kind:single"]
        kinds = KindClassifier.load()
        only_single = [q for q in qa if kinds.groups(q["question"]) == ("kind:single",)]
        assert served["n"] == len(only_single) < len(qa)
        body = client.post(
            "/v1/retrieve", json={"question": only_single[0]["question"], "alpha": 0.1}
        ).json()
        assert body["calibration"]["scale"] == "relative"
        assert (body["calibration"]["n"], body["calibration"]["group_n"]) == (len(qa), served["n"])
        assert body["threshold"] == pytest.approx(served["thresholds"]["0.1"])
        shares = [c["relevance"] for c in body["citations"]]
        assert shares and all(s >= body["threshold"] for s in shares)
        # a question that may be multi-hop stays on the cosine
        other = next(q for q in qa if kinds.groups(q["question"]) != ("kind:single",))
        cosine = client.post("/v1/retrieve", json={"question": other["question"]}).json()
        assert cosine["calibration"]["scale"] == "cosine"
        assert all(c["relevance"] is None for c in cosine["citations"])
