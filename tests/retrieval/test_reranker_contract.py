"""One contract for every ``Reranker`` backend: ONNX in process (the API's default), torch (what
the critic worker runs, on a GPU when it has one) and ``RemoteReranker`` over HTTP to a real
worker process. Each must score a batch as the trained torch model does, keep the order it was
given, and carry the same ``version``, so a calibration taken with one serves the others."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from retrieval.rerank import (
    OnnxReranker,
    RemoteReranker,
    Reranker,
    TorchReranker,
    passage_text,
    read_info,
)

QUESTION = "Which telescope was launched into low Earth orbit in 1990?"
PASSAGES = [
    passage_text("Hubble Space Telescope", "A space telescope launched in 1990."),
    passage_text("Eiffel Tower", "A wrought-iron lattice tower in Paris."),
    passage_text("Mount Everest", "Earth's highest mountain above sea level, in the Himalayas."),
]
COSINES = [0.71, 0.12, 0.2]


@pytest.fixture(scope="module", params=["onnx", "torch", "worker"])
def backend(request: pytest.FixtureRequest, reranker_dir: Path) -> Iterator[Reranker]:
    if request.param == "onnx":
        reranker: Reranker = OnnxReranker(reranker_dir)
    elif request.param == "torch":
        reranker = TorchReranker(reranker_dir, device="cpu")
    else:
        reranker = RemoteReranker(request.getfixturevalue("reranker_worker_url"), timeout_s=60)
    yield reranker
    reranker.close()


@pytest.fixture(scope="module")
def reference(reranker_dir: Path) -> list[float]:
    """The trained model's scores, computed the way it was trained: Hugging Face's tokenizer
    and ``BertModel``, then the head."""
    import torch
    from transformers import AutoTokenizer, BertModel

    info = read_info(reranker_dir)
    model = BertModel.from_pretrained(reranker_dir, add_pooling_layer=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(reranker_dir)
    encoded = tokenizer([QUESTION] * len(PASSAGES), PASSAGES, padding=True, return_tensors="pt")
    with torch.no_grad():
        cls = model(**encoded).last_hidden_state[:, 0, :].numpy()
    scores = cls @ np.array(info.weight) + info.cosine * np.array(COSINES) + info.bias
    return [float(s) for s in scores]


def test_scores_are_the_trained_models(backend: Reranker, reference: list[float]) -> None:
    assert backend.score(QUESTION, PASSAGES, COSINES) == pytest.approx(reference, abs=1e-3)


def test_a_passage_scores_the_same_alone_and_in_any_order(backend: Reranker) -> None:
    together = backend.score(QUESTION, PASSAGES, COSINES)
    backwards = backend.score(QUESTION, PASSAGES[::-1], COSINES[::-1])
    assert backwards == pytest.approx(together[::-1], abs=1e-4)
    alone = backend.score(QUESTION, PASSAGES[1:2], COSINES[1:2])
    assert alone == pytest.approx(together[1:2], abs=1e-4)  # padding changes nothing


def test_nothing_to_score_is_no_scores(backend: Reranker) -> None:
    assert backend.score(QUESTION, [], []) == []


def test_every_backend_names_the_weights_alike(backend: Reranker, reranker_dir: Path) -> None:
    """The version is what a calibration records: equal versions mean one scale."""
    assert backend.version == OnnxReranker(reranker_dir).version
    assert len(backend.version) == 16
