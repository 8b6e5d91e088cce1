"""Critic fixtures: a synthetic self-practice set over real summaries, and trained critics.

Every weights file and model lives in a temp dir: nothing trained on synthetic rows may end
up as the packaged ``critic/weights/features.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from critic.metrics import Costs, Metrics
from critic.train import train_cross_encoder, train_features
from retrieval.types import Document
from tests.conftest import free_port
from tests.critic.synth import practice_rows

COSTS = Costs(wrong_accept=1.0, false_reject=0.5, round=0.1)


@pytest.fixture(scope="session")
def rows(wiki_docs: list[Document]) -> list[dict[str, Any]]:
    """~180 rows from 120 cloze questions, about 40 % positive."""
    return practice_rows(wiki_docs, 120, seed=0)


@pytest.fixture(scope="session")
def features_weights(rows: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    weights, _ = train_features(rows, seed=0, costs=COSTS, trained_on="synthetic test rows")
    path = tmp_path_factory.mktemp("weights") / "features.json"
    path.write_text(json.dumps(weights))
    return path


def train_tiny_cross_encoder(docs: list[Document], out: Path) -> Metrics:
    """14 questions: 14 balanced training rows, 7 held out; one epoch. Plumbing, not skill."""
    tiny = practice_rows(docs, 14, seed=1)
    return train_cross_encoder(tiny, seed=0, out_dir=out, epochs=1, costs=COSTS)


@pytest.fixture(scope="session")
def cross_encoder_dir(wiki_docs: list[Document], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("critic-model") / "critic-cross-encoder"
    train_tiny_cross_encoder(wiki_docs, out)
    return out


@pytest.fixture(scope="session")
def critic_worker_url(
    cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Base URL of a real critic worker process serving ``cross_encoder_dir``."""
    from workers.critic_server import launch_critic_worker
    from workers.process import stop_worker

    handle = launch_critic_worker(
        cross_encoder_dir, free_port(), tmp_path_factory.mktemp("critic-logs"), timeout_s=180
    )
    try:
        yield handle.url
    finally:
        stop_worker(handle)
