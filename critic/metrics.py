"""How good a critic is on held-out rows, and where its accept threshold τ should sit.

AUROC, expected calibration error, and the τ that minimizes the expected cost of the decision
the pipeline makes with it (accept wrong / reject right / one more round), raised so that a
share of the unanswerable questions would be abstained on. numpy only: ``critic.train`` uses
these on its held-out part, and offline evaluation (``evaluation.qa_report``) on the answers of
a run, neither of which needs training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Costs:
    """What each outcome of the accept/search-again decision costs (settings ``critic_cost_*``).

    Attributes:
        wrong_accept: accepting an answer that is wrong.
        false_reject: rejecting an answer that is right.
        round: one more retrieval round (paid by every rejection).
    """

    wrong_accept: float
    false_reject: float
    round: float


@dataclass(frozen=True, slots=True)
class Metrics:
    """A critic's quality on the held-out questions.

    Attributes:
        tau: the accept threshold with the least expected cost on the held-out rows (chosen on
            them, so accuracy and cost at τ are slightly optimistic; AUROC and ECE are not),
            raised to ``tau_floor`` if below it.
        tau_floor: the least τ at which the target share of the unanswerable training
            questions would abstain (no round of theirs scores at or above it), each scored
            out of fold by the features backend (the cross-encoder, too costly to fine-tune
            per fold, scores them in sample); 0 without any.
        accuracy: share of rows where "score ≥ τ" equals the label.
        ece: expected calibration error over 10 equal-width bins.
        expected_cost: mean cost per round when deciding at τ.
        cost_accept_all: mean cost per round with no critic (every answer accepted).
    """

    n_train: int
    n_test: int
    test_questions: int
    positive_rate: float
    auroc: float
    tau: float
    tau_floor: float
    accuracy: float
    ece: float
    expected_cost: float
    cost_accept_all: float

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve: P(a positive outscores a negative), ties counting half."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if not n_pos or not n_neg:
        raise ValueError("AUROC needs both classes")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = np.arange(1, len(s) + 1)
    for value in np.unique(s):  # average ranks over ties
        tied = s == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_calibration_error(
    scores: Sequence[float], labels: Sequence[int], bins: int = 10
) -> float:
    """Σ_bins (share of rows) · |mean score − positive rate|, equal-width bins on [0, 1]."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    which = np.minimum((s * bins).astype(np.int64), bins - 1)
    return float(
        sum(
            abs(s[which == b].mean() - y[which == b].mean()) * (which == b).mean()
            for b in range(bins)
            if (which == b).any()
        )
    )


def expected_cost(
    scores: Sequence[float], labels: Sequence[int], tau: float, costs: Costs
) -> float:
    """Mean cost per round of accepting when score ≥ τ, else searching again."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    accept = s >= tau
    per_row = np.where(accept, (1 - y) * costs.wrong_accept, y * costs.false_reject + costs.round)
    return float(per_row.mean())


def best_tau(scores: Sequence[float], labels: Sequence[int], costs: Costs) -> float:
    """The threshold of least expected cost: 0, 1, or a midpoint between adjacent scores.

    Midpoints rather than the scores themselves, so a new score equal to a seen one falls on
    the same side; ties in cost go to the lower τ.
    """
    values = np.unique(np.asarray(scores, dtype=np.float64))
    midpoints: list[float] = ((values[1:] + values[:-1]) / 2).tolist()
    candidates = [0.0, *midpoints, 1.0]
    return min(candidates, key=lambda tau: expected_cost(scores, labels, tau, costs))


def unanswerable_floor(
    rows: Sequence[dict[str, Any]], scores: Sequence[float], share: float
) -> float:
    """The least τ below which at least ``share`` of the unanswerable questions among ``rows``
    score in every round (so the loop abstains on them): a midpoint between adjacent question
    maxima, as ``best_tau`` takes. 0 when there are none or ``share`` is 0."""
    best: dict[str, float] = {}
    for row, score in zip(rows, scores, strict=True):
        if row.get("type") == "unanswerable":
            qid = str(row["qid"])
            best[qid] = max(best.get(qid, 0.0), score)
    if not best or share <= 0:
        return 0.0
    ordered = sorted(best.values())
    below = math.ceil(share * len(ordered))  # questions that must score below τ
    if below >= len(ordered):
        return (ordered[-1] + 1.0) / 2
    return (ordered[below - 1] + ordered[below]) / 2


def evaluate(
    scores: Sequence[float],
    labels: Sequence[int],
    costs: Costs,
    *,
    n_train: int,
    questions: int,
    tau_floor: float = 0.0,
) -> Metrics:
    """Held-out metrics of ``scores`` (P(sufficient)) against ``labels``, at the cost-optimal
    τ or ``tau_floor``, whichever is higher."""
    y = np.asarray(labels, dtype=np.int64)
    tau = max(best_tau(scores, labels, costs), tau_floor)
    return Metrics(
        n_train=n_train,
        n_test=len(y),
        test_questions=questions,
        positive_rate=float(y.mean()),
        auroc=auroc(scores, labels),
        tau=tau,
        tau_floor=tau_floor,
        accuracy=float(((np.asarray(scores) >= tau) == (y == 1)).mean()),
        ece=expected_calibration_error(scores, labels),
        expected_cost=expected_cost(scores, labels, tau, costs),
        cost_accept_all=expected_cost(scores, labels, 0.0, costs),
    )
