"""The reranker on real parts: a cross-encoder fine-tuned from the bundled MiniLM
(``reranker_dir``), served on onnxruntime, over the real embedder and Qdrant Edge.

What must hold: the in-process ONNX scores are the trained torch model's; a calibration keeps
the reranker's scores; a reranked query passes exactly the candidates whose relevance clears
the calibrated threshold, so a held-out question is covered exactly when its calibration-time
score says so; and a reranked request the server or the calibration cannot serve is refused.
"""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from retrieval.calibration import calibrate, load_calibration
from retrieval.calibration_set import rerank_scores
from retrieval.conformal import Calibration, conformal_quantile, score_threshold
from retrieval.embed.base import Embedder
from retrieval.errors import RerankerUnavailable
from retrieval.ingest import Ingestor
from retrieval.rerank import (
    OnnxReranker,
    Reranking,
    load_reranker,
    passage_text,
    read_info,
    relevance,
)
from retrieval.retriever import Retriever
from retrieval.store import EdgeStore
from retrieval.types import Budget, Document
from tests.retrieval.questions import first_sentence_items

BIG = Budget(chunks=20, chars=10**7)


@pytest.fixture(scope="module")
def rerank(reranker_dir: Path) -> Reranking:
    return Reranking(OnnxReranker(reranker_dir), candidates=10)


@pytest.fixture(scope="module")
def retriever(
    wiki_sample: list[Document],
    embedder: Embedder,
    rerank: Reranking,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Retriever]:
    store = EdgeStore(tmp_path_factory.mktemp("rerank"))
    ingestor = Ingestor(store, embedder, chunk_words=160, chunk_overlap=32)
    ingestor.ingest("c", wiki_sample)
    ingestor.ingest("plain", wiki_sample)
    yield Retriever(store, embedder, reranking=rerank)
    store.close()


def test_onnx_scores_are_the_trained_torch_models(reranker_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer, BertModel

    info = read_info(reranker_dir)
    question = "Which telescope was launched into low Earth orbit in 1990?"
    passages = [
        passage_text("Hubble Space Telescope", "A space telescope launched in 1990."),
        passage_text("Eiffel Tower", "A wrought-iron lattice tower in Paris."),
    ]
    cosines = [0.71, 0.12]
    model = BertModel.from_pretrained(reranker_dir, add_pooling_layer=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(reranker_dir)
    encoded = tokenizer([question] * 2, passages, padding=True, return_tensors="pt")
    with torch.no_grad():
        cls = model(**encoded).last_hidden_state[:, 0, :].numpy()
    expected = cls @ np.array(info.weight) + info.cosine * np.array(cosines) + info.bias
    got = OnnxReranker(reranker_dir).score(question, passages, cosines)
    assert got == pytest.approx(expected.tolist(), abs=1e-3)
    assert info.layers == 1 and model.config.num_hidden_layers == 1


def test_a_reranked_query_passes_what_clears_the_calibrated_relevance(
    retriever: Retriever, rerank: Reranking, wiki_sample: list[Document]
) -> None:
    items = first_sentence_items(wiki_sample)
    calibration = calibrate(
        retriever.store,
        retriever.embedder,
        "c",
        items,
        source="t",
        default_alpha=0.2,
        rerank=rerank,
    )
    assert calibration.rerank_version == rerank.reranker.version
    assert calibration.rerank_candidates == 10
    assert len(calibration.rerank_scores) == len(items)
    assert sum(len(s) for s in calibration.rerank_groups.values()) >= len(items)
    # kept through the store as JSON, infinite scores and all
    stored = load_calibration(retriever.store, "c")
    assert stored is not None and stored.rerank_scores == calibration.rerank_scores
    assert Calibration.from_json(calibration.to_json()) == calibration

    question = items[0].question
    result = retriever.retrieve("c", question, alpha=0.2, budget=BIG, rerank=True)
    reranked = calibration.reranked()
    quantile = reranked.groups_qhat(0.2, result.calibration.groups if result.calibration else ())
    assert result.threshold == score_threshold(quantile.qhat)
    relevances = [h.relevance for h in result.hits]
    assert all(r is not None and r >= result.threshold for r in relevances)
    assert relevances == sorted(relevances, reverse=True)
    assert "rerank" in result.timings_ms
    # what failed to clear it is among the candidates, below the threshold
    every = retriever.retrieve("c", question, alpha=None, budget=BIG, rerank=True, conformal=False)
    assert len(every.hits) == 10 and every.threshold is None
    below = [h for h in every.hits if h.id not in {k.id for k in result.hits}]
    assert all((h.relevance or 0) < result.threshold for h in below)


def test_a_held_out_question_is_covered_exactly_when_its_score_says(
    retriever: Retriever, rerank: Reranking, wiki_sample: list[Document]
) -> None:
    """The query-time set and the calibration-time score agree question by question, which
    is what makes the calibrated rate the query's coverage."""
    items = first_sentence_items(wiki_sample)
    random.Random(1).shuffle(items)
    cal, test = items[: len(items) // 2], items[len(items) // 2 :]
    vectors = retriever.embedder.embed([it.question for it in test]).tolist()
    scores = rerank_scores(retriever.store, rerank, "c", test, vectors)
    calibration = calibrate(
        retriever.store,
        retriever.embedder,
        "c",
        cal,
        source="t",
        default_alpha=0.3,
        rerank=rerank,
        replace_smaller=True,
    )
    qhat = conformal_quantile(calibration.rerank_scores, 0.3)
    assert math.isfinite(qhat)
    agree = 0
    for item, score in zip(test, scores, strict=True):
        result = retriever.retrieve(
            "c", item.question, alpha=0.3, budget=BIG, rerank=True, group="pooled"
        )
        covered = any(h.doc_id in item.gold_doc_ids for h in result.hits)
        agree += covered == (score <= qhat)
    assert agree == len(test)


def test_rerank_is_refused_where_it_cannot_be_served(
    retriever: Retriever, wiki_sample: list[Document]
) -> None:
    items = first_sentence_items(wiki_sample)
    calibrate(retriever.store, retriever.embedder, "plain", items, source="t", default_alpha=0.2)
    with pytest.raises(RerankerUnavailable, match="taken without one"):
        retriever.retrieve("plain", items[0].question, alpha=0.2, budget=BIG, rerank=True)
    bare = Retriever(retriever.store, retriever.embedder)
    with pytest.raises(RerankerUnavailable, match="covrag train-reranker"):
        bare.retrieve("plain", items[0].question, alpha=None, budget=BIG, rerank=True)
    # without rerank both serve as before
    assert bare.retrieve("plain", items[0].question, alpha=0.2, budget=BIG).hits


def test_relevance_is_the_logistic_of_the_score() -> None:
    assert relevance(0.0) == 0.5
    assert relevance(-1000.0) == 0.0
    assert relevance(2.0) == pytest.approx(1 / (1 + math.exp(-2)))


@pytest.mark.parametrize(
    ("broken", "content"),
    [
        ("model.safetensors", b"\x10\x00\x00"),  # cut short: safetensors' own error
        ("tokenizer.json", b"{"),
        ("reranker.json", b'{"weight": []}'),
    ],
)
def test_a_corrupt_reranker_is_unavailable_not_a_crash(
    reranker_dir: Path, tmp_path: Path, broken: str, content: bytes
) -> None:
    copy = tmp_path / "reranker"
    shutil.copytree(reranker_dir, copy)
    (copy / broken).write_bytes(content)
    with pytest.raises(RerankerUnavailable, match="no usable reranker"):
        load_reranker(copy)
