"""The critic worker over real HTTP, and remote critics whose server is down."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from critic import Critic, CriticInput, CriticUnavailable, CriticWeightsError, make_critic
from critic.cross_encoder import CrossEncoderModel, read_info
from critic.train import row_input
from llm import VLLMGenerator
from retrieval.errors import RerankerDown, RerankerUnavailable
from retrieval.rerank import INFO_FILE as RERANKER_INFO
from retrieval.rerank import RemoteReranker
from retrieval.rerank import read_info as read_reranker_info
from tests.conftest import free_port
from workers.critic_server import MAX_PASSAGES, create_critic_app, launch_critic_worker
from workers.errors import WorkerError
from workers.process import stop_worker


def test_worker_scores_like_the_model_in_process(
    critic_worker_url: str, cross_encoder_dir: Path, rows: list[dict[str, Any]]
) -> None:
    items = [row_input(r) for r in rows[:3]]
    health = httpx.get(f"{critic_worker_url}/health", timeout=10).json()
    assert health["status"] == "ok"
    assert health["device"] == "cpu"
    assert health["tau"] == read_info(cross_encoder_dir)["tau"]

    response = httpx.post(
        f"{critic_worker_url}/score", json={"items": [i.to_json() for i in items]}, timeout=60
    )
    assert response.status_code == 200, response.text
    local = CrossEncoderModel.load(cross_encoder_dir, device="cpu").predict(items)
    assert response.json()["scores"] == pytest.approx(local, abs=1e-5)
    assert response.json()["tau"] == health["tau"]


def test_remote_critic_takes_the_workers_tau(
    critic_worker_url: str, cross_encoder_dir: Path, rows: list[dict[str, Any]]
) -> None:
    critic = make_critic("cross-encoder", worker_url=critic_worker_url, timeout_s=60)

    async def run() -> float:
        try:
            return await critic.score(row_input(rows[0]))
        finally:
            await critic.aclose()

    assert critic.tau == 0.5  # nothing heard yet
    assert 0.0 <= anyio.run(run) <= 1.0
    assert critic.tau == read_info(cross_encoder_dir)["tau"]


@pytest.mark.parametrize(
    "body", [{"items": []}, {"items": [{"passages": []}]}, {"nothing": 1}, {"items": "x"}]
)
def test_worker_rejects_malformed_requests(critic_worker_url: str, body: dict[str, Any]) -> None:
    assert httpx.post(f"{critic_worker_url}/score", json=body, timeout=10).status_code == 422


def test_worker_refuses_to_start_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(CriticWeightsError, match="holds no cross-encoder critic"):
        create_critic_app(tmp_path / "no-model")


ITEM = CriticInput(question="Who?", passages=["Ada Lovelace: a mathematician."], answer="Ada")


@pytest.mark.parametrize("kind", ["cross-encoder", "llm-judge"])
def test_remote_critic_down_is_unavailable(kind: str) -> None:
    """Fake for failure injection: a closed port stands in for a worker that is down."""
    dead = f"http://127.0.0.1:{free_port()}"

    async def run() -> None:
        generator = VLLMGenerator([f"{dead}/v1"], model="m")
        critic: Critic = make_critic(kind, worker_url=dead, generator=generator, timeout_s=5)
        try:
            with pytest.raises(CriticUnavailable):
                await critic.score(ITEM)
        finally:
            await critic.aclose()
            await generator.aclose()

    asyncio.run(run())


def test_the_worker_is_started_from_this_checkout() -> None:
    """The child's PYTHONPATH starts at the checkout that holds this module, so ``-m`` finds
    this code whatever the caller's directory."""
    from workers import critic_server

    assert Path(critic_server.__file__) == critic_server._REPO / "workers" / "critic_server.py"


def test_a_reranker_worker_serves_the_reranker_and_refuses_bad_batches(
    reranker_worker_url: str,
) -> None:
    health = httpx.get(f"{reranker_worker_url}/health", timeout=10).json()
    assert len(health["reranker_version"]) == 16
    assert health["tau"] is None and health["model_dir"] is None
    item = {"question": "Who?", "passages": ["Ada Lovelace."], "answer": "Ada"}
    r = httpx.post(f"{reranker_worker_url}/score", json={"items": [item]}, timeout=10)
    assert r.status_code == 404 and "serves no critic" in r.text
    good = {"question": "Who?", "passages": ["Ada Lovelace.", "Paris."], "cosines": [0.5, 0.1]}
    r = httpx.post(f"{reranker_worker_url}/rerank", json=good, timeout=30)
    assert r.status_code == 200 and r.json()["version"] == health["reranker_version"]
    for bad, field in (
        ({**good, "cosines": [0.5]}, "cosines: 1 given for 2 passages"),
        ({**good, "cosines": [float("nan"), 0.1]}, "cosines"),
        ({**good, "passages": ["x"] * (MAX_PASSAGES + 1)}, "passages"),
        ({**good, "passages": [], "cosines": []}, "passages"),
        ({**good, "question": ""}, "question"),
    ):
        r = httpx.post(  # json.dumps writes NaN as JSON's parsers read it; httpx would refuse
            f"{reranker_worker_url}/rerank",
            content=json.dumps(bad),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 422 and field in r.text, r.text


def test_a_critic_worker_without_a_reranker_says_how_to_serve_one(critic_worker_url: str) -> None:
    r = httpx.post(
        f"{critic_worker_url}/rerank",
        json={"question": "Who?", "passages": ["Ada."], "cosines": [0.5]},
        timeout=10,
    )
    assert r.status_code == 404 and "--reranker" in r.text
    with pytest.raises(RerankerUnavailable, match="covrag worker critic --reranker"):
        _ = RemoteReranker(critic_worker_url).version


def test_a_reranker_worker_that_is_down_fails_fast() -> None:
    """A closed port stands in for a worker that is down (failure injection)."""
    reranker = RemoteReranker(f"http://127.0.0.1:{free_port()}", timeout_s=5)
    start = time.monotonic()
    with pytest.raises(RerankerDown, match="reranker worker"):
        reranker.score("Who?", ["Ada."], [0.5])
    assert time.monotonic() - start < 3
    assert RerankerDown.retry_after > 0


def test_a_reranker_swapped_under_a_request_fails_it_and_the_next_sees_the_new_one(
    reranker_dir: Path, tmp_path: Path
) -> None:
    """The worker behind the URL is restarted with other weights between the version check
    and the scoring: the scores would be on a scale no calibration was taken on."""
    other = tmp_path / "other"
    shutil.copytree(reranker_dir, other)
    info = read_reranker_info(other)
    (other / RERANKER_INFO).write_text(json.dumps({**info.to_json(), "bias": info.bias + 1.0}))
    port = free_port()
    first = launch_critic_worker(None, port, tmp_path, timeout_s=180, reranker_dir=reranker_dir)
    reranker = RemoteReranker(first.url, timeout_s=60)
    try:
        before = reranker.version
    finally:
        stop_worker(first)
    second = launch_critic_worker(None, port, tmp_path, timeout_s=180, reranker_dir=other)
    try:
        with pytest.raises(RerankerDown, match="changed during the request"):
            reranker.score("Who?", ["Ada."], [0.5])
        assert reranker.version != before
        assert len(reranker.score("Who?", ["Ada."], [0.5])) == 1
    finally:
        stop_worker(second)
        reranker.close()


def test_a_worker_needs_something_to_serve() -> None:
    with pytest.raises(WorkerError, match="needs a critic"):
        create_critic_app(None, None)
