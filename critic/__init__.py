"""Sufficiency critic (SIM-RAG): P(the evidence so far suffices for a right answer).

Three backends behind the ``Critic`` protocol (``critic.base``), chosen once by ``make_critic``:
``features`` (default; a calibrated logistic model over gold-free signals, numpy only),
``cross-encoder`` (fine-tuned MiniLM served by the critic worker, reached over HTTP) and
``llm-judge`` (the generator's own P(yes), the baseline). ``critic.train`` fits the first two
from self-practice rows. Nothing here imports the app or a web framework (a test checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from critic.base import Critic
from critic.cross_encoder import RemoteCrossEncoderCritic
from critic.errors import CriticError, CriticUnavailable, CriticWeightsError
from critic.features import FeaturesCritic
from critic.judge import LLMJudgeCritic
from critic.types import CriticInput, Signals
from llm import Generator

CriticKind = Literal["features", "cross-encoder", "llm-judge"]

__all__ = [
    "Critic",
    "CriticError",
    "CriticInput",
    "CriticKind",
    "CriticUnavailable",
    "CriticWeightsError",
    "Signals",
    "make_critic",
]


def make_critic(
    kind: CriticKind,
    *,
    weights_path: Path | None = None,
    worker_url: str = "http://127.0.0.1:8102",
    generator: Generator | None = None,
    timeout_s: float = 10.0,
) -> Critic:
    """The critic of ``kind``; each takes only the arguments it needs.

    Args:
        weights_path: features weights; ``None`` means the packaged ``critic/weights``.
        worker_url: base URL of the critic worker (cross-encoder).
        generator: the generator that judges (llm-judge); the caller keeps and closes it.
        timeout_s: the whole call to the worker or the judge.

    Raises:
        CriticWeightsError: missing or corrupt features weights (the server must not start).
        ValueError: an unknown kind, or llm-judge without a generator.
    """
    if kind == "features":
        return FeaturesCritic(weights_path)
    if kind == "cross-encoder":
        return RemoteCrossEncoderCritic(worker_url, timeout_s=timeout_s)
    if kind == "llm-judge":
        if generator is None:
            raise ValueError("the llm-judge critic needs a generator")
        return LLMJudgeCritic(generator, timeout_s)
    raise ValueError(f"unknown critic {kind!r}: features, cross-encoder or llm-judge")
