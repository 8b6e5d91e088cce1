"""The kind of a question — single-hop, bridge (multi-hop) or comparison — for
group-conditional (Mondrian) calibration.

Mondrian conformal prediction keeps its 1−α guarantee within each group as long as the group
is a function of the question alone, applied alike to calibration and live questions. So both
are grouped by this classifier, never by a calibration file's own ``type`` labels: a live
question has none, and grouping the two sides by different rules would break the guarantee
wherever the classifier errs.

The model is a multinomial logistic regression over hashed word unigrams and bigrams (the
words that mark a kind — "which … first, A or B", "the director of the film that" — are
common words, so no embedding is needed): one sparse dot product, microseconds a question,
and independent of the collection's embedder. Trained by ``scripts/train_kinds.py`` on the
training part of the QA set only, so the demo's calibration questions are as new to it as
live ones; its test accuracy is in docs/conformal.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

#: The kinds, in the order of the weights' rows.
KINDS = ("single", "bridge", "comparison")
#: The group of questions that may need a second hop: round 0's threshold guarantees nothing
#: about that hop; with COVRAG_MULTI_HOP_LINKS their context also holds calibrated linked
#: documents (``retrieval.links``), else they are not flagged.
BRIDGE_GROUP = "kind:bridge"
#: The group of questions that can only be single-hop.
SINGLE_GROUP = "kind:single"
#: Hash buckets of the word n-grams.
BUCKETS = 1 << 12
#: The shipped weights.
WEIGHTS = Path(__file__).with_name("weights") / "kinds.json"

_WORD = re.compile(r"[a-z0-9]+")


#: Words that open a relative clause: a bridge question nests one entity inside another
#: ("the author of the novel that …").
_RELATIVE = frozenset(["who", "whom", "whose", "that", "which", "where", "when"])


def ngram_buckets(question: str) -> np.ndarray:
    """The distinct hash buckets of the question's words, word pairs and first word, its
    length (in steps of four words) and how many relative clauses it nests."""
    words = _WORD.findall(question.lower())
    grams = [*words, *(f"{a} {b}" for a, b in pairwise(words))]
    if words:
        grams.append(f"^{words[0]}")
    grams.append(f"#length {len(words) // 4}")
    grams.append(f"#relative {sum(w in _RELATIVE for w in words[1:])}")
    grams.append(f"#of {min(words.count('of'), 3)}")
    return np.unique(np.array([zlib.crc32(g.encode()) % BUCKETS for g in grams], dtype=np.int64))


@dataclass(frozen=True, slots=True)
class KindClassifier:
    """Scores each kind as the sum of the weights of the question's buckets."""

    coef: np.ndarray  # (len(KINDS), BUCKETS)
    intercept: np.ndarray  # (len(KINDS),)
    #: A digest of the weights: a calibration records it, as its groups hold only for the
    #: classifier that made them.
    version: str
    #: Per kind, the lowest P(kind) that still puts the kind in a question's set (``kinds``).
    set_thresholds: np.ndarray  # (len(KINDS),)

    @classmethod
    def load(cls, path: Path = WEIGHTS) -> KindClassifier:
        raw = path.read_bytes()
        data = json.loads(raw)
        if tuple(data["kinds"]) != KINDS or data["buckets"] != BUCKETS:
            raise ValueError(f"{path}: weights for other kinds or buckets than this code's")
        return cls(
            np.asarray(data["coef"], dtype=np.float64),
            np.asarray(data["intercept"]),
            hashlib.sha256(raw).hexdigest()[:12],
            np.asarray(data["set_thresholds"], dtype=np.float64),
        )

    def probabilities(self, question: str) -> np.ndarray:
        """P(kind) for each of ``KINDS``."""
        logits = self.coef[:, ngram_buckets(question)].sum(axis=1) + self.intercept
        exp = np.exp(logits - logits.max())
        probabilities: np.ndarray = exp / exp.sum()
        return probabilities

    def kind(self, question: str) -> str:
        return KINDS[int(np.argmax(self.probabilities(question)))]

    def multi_hop(self, question: str) -> float:
        """1 − P(single): how far the question reads as more than one lookup (the shift watch
        compares its live distribution with the calibration set's)."""
        return float(1.0 - self.probabilities(question)[0])

    def groups(self, question: str, caller_group: str | None = None) -> tuple[str, ...]:
        """The calibration groups a question belongs to: the caller's group when given (a
        tenant, a source), else ``kind:K`` for each kind in its set (``read``)."""
        return self.read(question, caller_group)[0]

    def read(self, question: str, caller_group: str | None = None) -> tuple[tuple[str, ...], float]:
        """(``groups``, ``multi_hop``) of a question from one pass of the model, as a query
        needs both.

        A question's kinds are a set, not one guess: every kind whose probability reaches its
        ``set_thresholds`` entry, most likely first (the most likely one always). The
        thresholds are class-conditional conformal quantiles of out-of-fold probabilities
        (``train``), so a question of a kind has that kind in its set with probability
        ≥ 1 − ``SET_MISS``; a bridge question the classifier takes for single-hop still gets
        the bridge group's threshold, or no guarantee.
        """
        p = self.probabilities(question)
        if caller_group:
            return (f"group:{caller_group}",), float(1.0 - p[0])
        order = np.argsort(-p, kind="stable")
        kinds = [int(order[0])] + [int(k) for k in order[1:] if p[k] >= self.set_thresholds[k]]
        return tuple(f"kind:{KINDS[k]}" for k in kinds), float(1.0 - p[0])


def relative_keys(groups: Iterable[str]) -> set[str]:
    """The groups among ``groups`` whose requests are thresholded on the relative scale
    (``retrieval.conformal.RelativeScale``): a caller's group, and ``kind:single`` for a
    question whose set holds no other kind. A question that may be a comparison or
    multi-hop stays on the cosine: the other article it needs takes a share of the top
    hits, so its own share says little.

    A request is on the relative scale when all its groups are; a calibration question
    counts in the relative scale's groups among its own, so each such group is calibrated
    on exactly the questions served on that scale.
    """
    kinds = {g for g in groups if g.startswith("kind:")}
    keys = {g for g in groups if g.startswith("group:")}
    return keys | kinds if kinds == {SINGLE_GROUP} else keys


#: The share of a kind's questions its set may miss (the set thresholds' level).
SET_MISS = 0.1


def _features(questions: Sequence[str]) -> np.ndarray:
    x = np.zeros((len(questions), BUCKETS))
    for row, question in enumerate(questions):
        x[row, ngram_buckets(question)] = 1.0
    return x


def _model(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    # C by 5-fold cross-validation on the training questions (bridge recall, then accuracy)
    return LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000, random_state=seed)


def set_thresholds(probabilities: np.ndarray, y: np.ndarray, miss: float = SET_MISS) -> np.ndarray:
    """Per kind k, the ⌊miss·(n_k+1)⌋-th smallest P(k) among the n_k questions of kind k
    (class-conditional split conformal): a new question of kind k has P(k) at or above it
    with probability ≥ 1 − miss. Zero (always in the set) when n_k is too small for ``miss``."""
    out = np.zeros(len(KINDS))
    for k in range(len(KINDS)):
        own = np.sort(probabilities[y == k, k])
        rank = math.floor(miss * (len(own) + 1))
        out[k] = own[rank - 1] if rank >= 1 else 0.0
    return out


def train(questions: Sequence[str], kinds: Sequence[str], seed: int) -> dict[str, Any]:
    """The weights file (as a dict) of a classifier fitted on labelled questions, with set
    thresholds from 5-fold out-of-fold probabilities (each question scored by a model that
    did not see it, as a live one is)."""
    from sklearn.model_selection import StratifiedKFold

    x = _features(questions)
    y = np.array([KINDS.index(k) for k in kinds])
    out_of_fold = np.zeros((len(y), len(KINDS)))
    for fit, held in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
        fold = _model(seed).fit(x[fit], y[fit])
        out_of_fold[np.ix_(held, fold.classes_)] = fold.predict_proba(x[held])
    model = _model(seed).fit(x, y)
    coef = np.zeros((len(KINDS), BUCKETS))
    intercept = np.zeros(len(KINDS))
    coef[model.classes_] = model.coef_
    intercept[model.classes_] = model.intercept_
    return {
        "kinds": list(KINDS),
        "buckets": BUCKETS,
        "coef": np.round(coef, 5).tolist(),
        "intercept": np.round(intercept, 5).tolist(),
        "set_thresholds": np.round(set_thresholds(out_of_fold, y), 5).tolist(),
    }
