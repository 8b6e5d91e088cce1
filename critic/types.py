"""What a critic judges: one round's question, evidence, answer and the signals around it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Signals:
    """Gold-free signals the pipeline already has when a round ends.

    Attributes:
        top_similarity: cosine similarity of the best passage (0 when there is none).
        margin: ``top_similarity`` minus the conformal threshold (0 when there is none).
        passed: passages in the context so far.
        none_cleared: no passage cleared the conformal threshold this round.
        truncated: the reply ran into the token budget and its answer was cut back.
        choice: the answer was chosen between the two things a comparison question names.
        mean_logprob: the generator's mean token log-probability over its reply.
        answer_tokens: tokens in the reply.
        round_index: 0 for the first retrieval round.
    """

    top_similarity: float = 0.0
    margin: float = 0.0
    passed: int = 0
    none_cleared: bool = False
    truncated: bool = False
    choice: bool = False
    mean_logprob: float = 0.0
    answer_tokens: int = 0
    round_index: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signals:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True, slots=True)
class CriticInput:
    """One round to judge. ``passages`` are the context texts, best first (title included)."""

    question: str
    passages: list[str]
    answer: str
    signals: Signals = field(default_factory=Signals)

    def to_json(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "passages": self.passages,
            "answer": self.answer,
            "signals": self.signals.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CriticInput:
        return cls(
            question=str(data["question"]),
            passages=[str(p) for p in data.get("passages", [])],
            answer=str(data.get("answer", "")),
            signals=Signals.from_json(data.get("signals") or {}),
        )
