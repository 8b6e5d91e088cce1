"""Training and held-out metrics for the critics, from self-practice rows (``covrag selfpractice``).

A row is one round of one training question, labelled 1 when its answer matched a gold answer.
Rows are split by question id (rounds of one question are not independent, so a question never
sits on both sides), classes are balanced, and everything random is seeded. The held-out part
gives AUROC, expected calibration error, and the accept threshold τ that minimizes the expected
cost of the decision the pipeline makes with it (accept wrong / reject right / one more round).
scikit-learn (the ``train`` extra) is imported only by ``train_features``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from critic.features import FEATURE_NAMES, WEIGHTS_VERSION, LogisticModel, feature_matrix
from critic.types import CriticInput, Signals
from retrieval.jsonl import question_of, read_jsonl

Row = dict[str, Any]

#: Share of question ids held out for the metrics.
TEST_FRACTION = 0.25
#: Folds of the out-of-fold logits that Platt scaling is fitted on.
PLATT_FOLDS = 5
_REQUIRED = ("qid", "question", "passages", "answer", "label")


@dataclass(frozen=True, slots=True)
class Costs:
    """What each outcome of the accept/search-again decision costs (``COVRAG_CRITIC_COST_*``).

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


# ---------------------------------------------------------------------------------------------
# Rows


def _row(row: dict[str, Any], _lineno: int) -> Row:
    missing = [k for k in _REQUIRED if k not in row]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    question_of(row)
    if row["label"] not in (0, 1):
        raise ValueError(f"label must be 0 or 1, not {row['label']!r}")
    return row


def load_rows(path: Path) -> tuple[list[Row], list[str]]:
    """Self-practice rows of a JSONL file, and ``file:line: why`` for each line skipped."""
    return read_jsonl(path, _row)


def row_input(row: Row) -> CriticInput:
    """The critic's view of a row: passages as "title: text", like the pipeline builds them."""
    return CriticInput(
        question=str(row["question"]),
        passages=[f"{p.get('title', '')}: {p.get('text', '')}" for p in row["passages"]],
        answer=str(row["answer"]),
        signals=Signals.from_json(row.get("signals") or {}),
    )


def split_by_question(
    rows: Sequence[Row], seed: int, test_fraction: float = TEST_FRACTION
) -> tuple[list[Row], list[Row]]:
    """(train, test): a seeded shuffle of the question ids, ``test_fraction`` of them held out."""
    qids = sorted({str(r["qid"]) for r in rows})
    if len(qids) < 2:
        raise ValueError("need rows from at least two questions to hold some out")
    random.Random(seed).shuffle(qids)
    held = set(qids[: min(len(qids) - 1, max(1, round(len(qids) * test_fraction)))])
    test = [r for r in rows if str(r["qid"]) in held]
    return [r for r in rows if str(r["qid"]) not in held], test


def downsample(rows: Sequence[Row], seed: int) -> list[Row]:
    """Both classes at the minority's size, the majority sampled without replacement (SIM-RAG)."""
    by_label = [[r for r in rows if r["label"] == y] for y in (0, 1)]
    n = min(len(group) for group in by_label)
    rng = random.Random(seed)
    kept = [r for group in by_label for r in rng.sample(group, n)]
    rng.shuffle(kept)
    return kept


def _labels(rows: Sequence[Row]) -> np.ndarray:
    return np.array([int(r["label"]) for r in rows], dtype=np.int64)


def _split(rows: Sequence[Row], seed: int) -> tuple[list[Row], list[Row]]:
    """``split_by_question``, refusing a part that lacks a class (no AUROC, nothing to learn)."""
    train, test = split_by_question(rows, seed)
    for part, name in ((train, "training"), (test, "held-out")):
        if len({r["label"] for r in part}) < 2:
            raise ValueError(f"the {name} part has one class only: more self-practice rows needed")
    return train, test


# ---------------------------------------------------------------------------------------------
# Metrics


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


def unanswerable_floor(rows: Sequence[Row], scores: Sequence[float], share: float) -> float:
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


def _held_out_metrics(
    train: Sequence[Row],
    test: Sequence[Row],
    scores: Sequence[float],
    costs: Costs,
    tau_floor: float,
) -> Metrics:
    return evaluate(
        scores,
        _labels(test).tolist(),
        costs,
        n_train=len(train),
        questions=len({str(r["qid"]) for r in test}),
        tau_floor=tau_floor,
    )


# ---------------------------------------------------------------------------------------------
# Backends


def _standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = x.std(axis=0)
    return x.mean(axis=0), np.where(scale > 1e-12, scale, 1.0)  # constant features: leave as is


def _fit_logit(x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, Any]:
    """Class-balanced L2 logistic regression on standardized ``x``: the weights' linear part."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = _standardize(x)
    model = LogisticRegression(class_weight="balanced", max_iter=1000, random_state=seed)
    model.fit((x - mean) / scale, y)
    return {
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coef": model.coef_[0].tolist(),
        "intercept": float(model.intercept_[0]),
    }


def _weights(linear: dict[str, Any], platt: dict[str, float] | None, tau: float) -> dict[str, Any]:
    return {
        "version": WEIGHTS_VERSION,
        "feature_names": list(FEATURE_NAMES),
        **linear,
        "platt": platt,
        "tau": tau,
        "trained_on": "",
        "command": "",
        "metrics": {},
    }


def _out_of_fold(
    x: np.ndarray, y: np.ndarray, groups: list[str], seed: int, platt: dict[str, float] | None
) -> Iterator[tuple[np.ndarray, LogisticModel]]:
    """(rows, a model fitted without their questions) for each of ``PLATT_FOLDS`` folds."""
    from sklearn.model_selection import GroupKFold

    folds = GroupKFold(n_splits=min(PLATT_FOLDS, len(set(groups))))
    for fit_idx, val_idx in folds.split(x, y, groups):
        linear = _fit_logit(x[fit_idx], y[fit_idx], seed)
        yield val_idx, LogisticModel.from_weights(_weights(linear, platt, 0.5), "out-of-fold")


def _platt(x: np.ndarray, y: np.ndarray, groups: list[str], seed: int) -> dict[str, float]:
    """Platt scaling fitted on out-of-fold logits (grouped by question).

    Balanced class weights make the model score as if both classes were equally common; an
    unweighted fit on logits the model did not train on maps them back to the real rates.
    """
    from sklearn.linear_model import LogisticRegression

    oof = np.zeros(len(y))
    for rows, model in _out_of_fold(x, y, groups, seed, None):
        oof[rows] = model.logits(x[rows])
    calibrator = LogisticRegression(C=1e4, max_iter=1000).fit(oof[:, None], y)
    return {"a": float(calibrator.coef_[0][0]), "b": float(calibrator.intercept_[0])}


def out_of_fold_scores(rows: Sequence[Row], seed: int, platt: dict[str, float]) -> list[float]:
    """Each row's P(sufficient) from a model that never saw its question.

    The unanswerable floor is taken on these: scored by a model trained on them, the
    unanswerable questions look easier to refuse than new ones are, and τ comes out too low.
    """
    x, y = feature_matrix([row_input(r) for r in rows]), _labels(rows)
    scores = np.zeros(len(rows))
    for held, model in _out_of_fold(x, y, [str(r["qid"]) for r in rows], seed, platt):
        scores[held] = model.probabilities(x[held])
    return scores.tolist()


def train_features(
    rows: Sequence[Row],
    *,
    seed: int,
    costs: Costs,
    abstain_unanswerable: float = 0.0,
    trained_on: str = "",
    command: str = "",
) -> tuple[dict[str, Any], Metrics]:
    """Fit the features critic; returns (its weights file as a dict, held-out metrics).

    The held-out probabilities come from the same numpy code that serves the weights, so the
    metrics describe exactly what the server will do. The weights' ``tau`` is the metrics' τ:
    the cost-optimal one, raised so that ``abstain_unanswerable`` of the unanswerable
    questions among all ``rows`` would be abstained on (``unanswerable_floor``), each scored
    out of fold.
    """
    train, test = _split(rows, seed)
    x_train, y_train = feature_matrix([row_input(r) for r in train]), _labels(train)
    platt = _platt(x_train, y_train, [str(r["qid"]) for r in train], seed)
    weights = _weights(_fit_logit(x_train, y_train, seed), platt, 0.5)
    model = LogisticModel.from_weights(weights, "training")
    scores = model.probabilities(feature_matrix([row_input(r) for r in test])).tolist()
    floor = unanswerable_floor(rows, out_of_fold_scores(rows, seed, platt), abstain_unanswerable)
    metrics = _held_out_metrics(train, test, scores, costs, floor)
    weights.update(
        tau=metrics.tau, trained_on=trained_on, command=command, metrics=metrics.to_json()
    )
    return weights, metrics


def train_cross_encoder(
    rows: Sequence[Row],
    *,
    seed: int,
    out_dir: Path,
    epochs: int,
    costs: Costs,
    abstain_unanswerable: float = 0.0,
    trained_on: str = "",
    command: str = "",
) -> Metrics:
    """Fine-tune the cross-encoder on the down-sampled training part into ``out_dir``.

    Writes ``critic.json`` (τ, metrics, provenance) beside the model; returns held-out metrics.
    """
    from critic.cross_encoder import CrossEncoderModel, fine_tune, write_info

    train, test = _split(rows, seed)
    balanced = downsample(train, seed)
    fine_tune(
        [row_input(r) for r in balanced],
        _labels(balanced).tolist(),
        out_dir,
        seed=seed,
        epochs=epochs,
    )
    model = CrossEncoderModel.load(out_dir)
    scores = model.predict([row_input(r) for r in test])
    floor = unanswerable_floor(
        rows, model.predict([row_input(r) for r in rows]), abstain_unanswerable
    )
    metrics = _held_out_metrics(balanced, test, scores, costs, floor)
    write_info(
        out_dir,
        {
            "tau": metrics.tau,
            "metrics": metrics.to_json(),
            "trained_on": trained_on,
            "command": command,
        },
    )
    return metrics
