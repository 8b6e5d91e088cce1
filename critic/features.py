"""The default critic: a calibrated logistic model over gold-free features, evaluated with numpy.

Features are what the pipeline already knows when a round ends (``Signals``) plus how well the
passages support the answer (token overlap, exact containment), so scoring takes a fraction of a
millisecond and needs neither a GPU nor scikit-learn (only training does, ``critic.train``).
The weights are a small JSON file; loading validates it strictly, because a critic that
silently scores with bad weights is worse than a server that refuses to start.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from critic.errors import CriticWeightsError
from critic.types import CriticInput
from retrieval.calibration_set import normalize_answer

#: The packaged weights (trained from self-practice rows by ``covrag train-critic``).
DEFAULT_WEIGHTS = Path(__file__).with_name("weights") / "features.json"
WEIGHTS_VERSION = 1

#: Model inputs, in weight order. Counts enter as log1p: the model is linear in its inputs, and
#: the step from 1 to 2 passages matters more than the one from 9 to 10.
FEATURE_NAMES: tuple[str, ...] = (
    "top_similarity",
    "margin",
    "log_passed",
    "none_cleared",
    "truncated",
    "choice",
    "mean_logprob",
    "log_answer_tokens",
    "round_index",
    "support_max",
    "support_all",
    "contained",
    "contained_top",
    "refusal",
    "log_answer_words",
    "question_overlap",
)

#: Normalized phrases by which a reply declines to answer (the 135M model paraphrases).
_REFUSALS = (
    "cannot answer",
    "cant answer",
    "can not answer",
    "unable to answer",
    "not enough",
    "dont know",
    "do not know",
    "no information",
    "not mentioned",
    "not provided",
    "does not contain",
    "do not contain",
    "does not say",
    "do not say",
    "no answer",
)


def is_refusal(answer: str) -> bool:
    """Empty, or a phrase that declines to answer."""
    norm = f" {normalize_answer(answer)} "
    return not norm.strip() or any(f" {phrase} " in norm for phrase in _REFUSALS)


def features(item: CriticInput) -> np.ndarray:
    """The feature vector of one round, in ``FEATURE_NAMES`` order."""
    answer = normalize_answer(item.answer)
    words = answer.split()
    unique = set(words)
    passages = [normalize_answer(p) for p in item.passages]
    tokens = [set(p.split()) for p in passages]
    everywhere = set().union(*tokens)
    asked = set(normalize_answer(item.question).split())
    denominator = max(len(unique), 1)
    s = item.signals
    return np.array(
        [
            s.top_similarity,
            s.margin,
            math.log1p(max(s.passed, 0)),
            float(s.none_cleared),
            float(s.truncated),
            float(s.choice),
            s.mean_logprob,
            math.log1p(max(s.answer_tokens, 0)),
            s.round_index,
            max((len(unique & t) / denominator for t in tokens), default=0.0),
            len(unique & everywhere) / denominator,
            float(bool(answer) and any(f" {answer} " in f" {p} " for p in passages)),
            float(bool(answer) and bool(passages) and f" {answer} " in f" {passages[0]} "),
            float(is_refusal(item.answer)),
            math.log1p(len(words)),
            len(unique & asked) / denominator,  # echoing the question is rarely the answer
        ],
        dtype=np.float64,
    )


def feature_matrix(items: Sequence[CriticInput]) -> np.ndarray:
    """Rows of ``features``; shape (len(items), len(FEATURE_NAMES))."""
    return np.array([features(it) for it in items], dtype=np.float64).reshape(
        len(items), len(FEATURE_NAMES)
    )


def _fail(source: str, why: str) -> CriticWeightsError:
    return CriticWeightsError(
        f"critic weights {source}: {why}. Rebuild them with `covrag train-critic --backend "
        "features --data FILE.jsonl` (or choose another critic)."
    )


def _vector(weights: dict[str, Any], key: str, source: str) -> np.ndarray:
    value = weights.get(key)
    if not isinstance(value, list) or len(value) != len(FEATURE_NAMES):
        raise _fail(source, f"'{key}' must be a list of {len(FEATURE_NAMES)} numbers")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise _fail(source, f"'{key}' must hold numbers only")
    array = np.array(value, dtype=np.float64)
    if not np.isfinite(array).all():
        raise _fail(source, f"'{key}' has a NaN or infinite value")
    return array


def _number(value: object, key: str, source: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise _fail(source, f"'{key}' must be a finite number, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True, eq=False)  # arrays have no single truth value
class LogisticModel:
    """P = σ(a·logit + b), logit = coef · standardized features + intercept (Platt a, b)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    platt_a: float
    platt_b: float
    tau: float

    @classmethod
    def from_weights(cls, weights: object, source: str) -> LogisticModel:
        """Validate a weights dict strictly; ``source`` names it in the error message.

        Raises:
            CriticWeightsError: a field is missing, of the wrong length or type, or not finite.
        """
        if not isinstance(weights, dict):
            raise _fail(source, "the top level must be a JSON object")
        version = weights.get("version")
        if version != WEIGHTS_VERSION:
            raise _fail(source, f"version must be {WEIGHTS_VERSION}, not {version!r}")
        names = weights.get("feature_names")
        if names != list(FEATURE_NAMES):
            raise _fail(
                source, f"feature_names {names!r} differ from this code's {list(FEATURE_NAMES)}"
            )
        scale = _vector(weights, "scale", source)
        if (scale <= 0).any():
            raise _fail(source, "'scale' must be positive")
        platt = weights.get("platt")
        if platt is not None and not isinstance(platt, dict):
            raise _fail(source, "'platt' must be null or {a, b}")
        tau = _number(weights.get("tau"), "tau", source)
        if not 0.0 <= tau <= 1.0:
            raise _fail(source, f"'tau' must lie in [0, 1], not {tau}")
        for key in ("trained_on", "command"):
            if not isinstance(weights.get(key), str):
                raise _fail(source, f"'{key}' must be a string")
        if not isinstance(weights.get("metrics"), dict):
            raise _fail(source, "'metrics' must be an object")
        return cls(
            mean=_vector(weights, "mean", source),
            scale=scale,
            coef=_vector(weights, "coef", source),
            intercept=_number(weights.get("intercept"), "intercept", source),
            platt_a=_number(platt.get("a"), "platt.a", source) if platt else 1.0,
            platt_b=_number(platt.get("b"), "platt.b", source) if platt else 0.0,
            tau=tau,
        )

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The uncalibrated logits of feature rows ``x`` (Platt scaling is fitted on these)."""
        logits: np.ndarray = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return logits

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        z = self.platt_a * self.logits(x) + self.platt_b
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # = σ(z), without overflow warnings


class FeaturesCritic:
    """The features backend of ``Critic``: loads and validates a weights file once.

    Example:
        >>> critic = FeaturesCritic()  # the packaged weights
        >>> await critic.score(CriticInput(question="…", passages=["…"], answer="Paris"))

    Raises:
        CriticWeightsError: the weights file is missing, not JSON, or not valid weights.
    """

    name = "features"

    def __init__(self, weights_path: Path | None = None) -> None:
        path = weights_path or DEFAULT_WEIGHTS
        try:
            weights = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise _fail(str(path), "file not found") from exc
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise _fail(str(path), f"not readable JSON ({exc})") from exc
        self.model = LogisticModel.from_weights(weights, str(path))
        self.tau = self.model.tau

    async def score(self, item: CriticInput) -> float:
        return float(self.model.probabilities(features(item)[None, :])[0])

    async def aclose(self) -> None:
        return None
