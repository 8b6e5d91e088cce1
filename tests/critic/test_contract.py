"""One contract for every critic backend, each built by ``make_critic`` against real parts.

features: weights trained in the session from synthetic rows; llm-judge: the real vLLM CPU
worker; cross-encoder: a tiny fine-tuned model in a real critic worker process, over HTTP.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from critic import Critic, CriticInput, Signals, make_critic
from critic.train import row_input
from llm import VLLMGenerator
from retrieval.types import Document

KINDS = [
    "features",
    "cross-encoder",
    pytest.param("llm-judge", marks=pytest.mark.integration),
]
#: Backends that can tell a supported answer from a refusal (the tiny test cross-encoder can't).
DISCERNING = {"features", "llm-judge"}


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``make_critic`` arguments of one backend, its real server started on first use."""
    args: dict[str, Any] = {"kind": request.param, "timeout_s": 120.0}
    if request.param == "features":
        args["weights_path"] = request.getfixturevalue("features_weights")
    elif request.param == "cross-encoder":
        args["worker_url"] = request.getfixturevalue("critic_worker_url")
    else:
        args["generator_url"] = request.getfixturevalue("generator_url")
    return args


def _scores(backend: dict[str, Any], items: list[CriticInput]) -> tuple[list[float], Critic]:
    """Build the critic (the judge's generator too), score ``items`` one by one, close them:
    all in one event loop, which the generator's connection pool is bound to."""

    async def run() -> tuple[list[float], Critic]:
        args = dict(backend)
        url = args.pop("generator_url", None)
        generator = None if url is None else VLLMGenerator([url], model="SmolLM2-135M-Instruct")
        critic = make_critic(**args, generator=generator)
        try:
            return [await critic.score(item) for item in items], critic
        finally:
            await critic.aclose()
            if generator is not None:
                await generator.aclose()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def eiffel(wiki_docs: list[Document]) -> tuple[CriticInput, CriticInput, CriticInput]:
    """The same round answered with the passage's fact, with a refusal, and with nothing."""
    doc = next(d for d in wiki_docs if d.id == "Eiffel Tower")
    signals = Signals(top_similarity=0.7, margin=0.15, passed=1, answer_tokens=20)
    base = CriticInput(
        question="In which city is the Eiffel Tower?",
        passages=[f"{doc.title}: {doc.text}"],
        answer="Paris",
        signals=signals,
    )
    refusal = CriticInput(
        base.question, base.passages, "I cannot answer from the given passages.", signals
    )
    return base, refusal, CriticInput(base.question, base.passages, "", signals)


def test_scores_are_probabilities(backend: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    scores, critic = _scores(backend, [row_input(r) for r in rows[:4]])
    assert all(0.0 <= s <= 1.0 for s in scores), scores
    assert 0.0 <= critic.tau <= 1.0
    assert critic.name == backend["kind"]


def test_same_input_same_score(backend: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    item = row_input(rows[0])
    (first, second), _ = _scores(backend, [item, item])
    assert first == pytest.approx(second, abs=1e-6)


def test_supported_answer_outscores_refusal_and_empty(
    backend: dict[str, Any], eiffel: tuple[CriticInput, CriticInput, CriticInput]
) -> None:
    if backend["kind"] not in DISCERNING:
        pytest.skip(f"the {backend['kind']} test model is too small to discern")
    (supported, refusal, empty), _ = _scores(backend, list(eiffel))
    assert supported > refusal
    assert supported > empty
