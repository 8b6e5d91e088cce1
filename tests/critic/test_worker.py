"""The critic worker over real HTTP, and remote critics whose server is down."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from critic import Critic, CriticInput, CriticUnavailable, CriticWeightsError, make_critic
from critic.cross_encoder import CrossEncoderModel, read_info
from critic.train import row_input
from llm import VLLMGenerator
from tests.conftest import free_port
from workers.critic_server import create_critic_app


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
