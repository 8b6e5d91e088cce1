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
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

#: The kinds, in the order of the weights' rows.
KINDS = ("single", "bridge", "comparison")
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

    def group(self, question: str, caller_group: str | None = None) -> str:
        """The calibration group key of a question: the caller's group when given (a tenant,
        a source), else the question's kind."""
        return self.read(question, caller_group)[0]

    def read(self, question: str, caller_group: str | None = None) -> tuple[str, float]:
        """(``group``, ``multi_hop``) of a question from one pass of the model, as a query
        needs both."""
        p = self.probabilities(question)
        kind = KINDS[int(np.argmax(p))]
        return f"group:{caller_group}" if caller_group else f"kind:{kind}", float(1.0 - p[0])


def train(questions: Sequence[str], kinds: Sequence[str], seed: int) -> dict[str, Any]:
    """The weights file (as a dict) of a classifier fitted on labelled questions."""
    from sklearn.linear_model import LogisticRegression

    x = np.zeros((len(questions), BUCKETS))
    for row, question in enumerate(questions):
        x[row, ngram_buckets(question)] = 1.0
    y = np.array([KINDS.index(k) for k in kinds])
    # C by 5-fold cross-validation on the training questions (bridge recall, then accuracy)
    model = LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000, random_state=seed)
    model.fit(x, y)
    coef = np.zeros((len(KINDS), BUCKETS))
    intercept = np.zeros(len(KINDS))
    coef[model.classes_] = model.coef_
    intercept[model.classes_] = model.intercept_
    return {
        "kinds": list(KINDS),
        "buckets": BUCKETS,
        "coef": np.round(coef, 5).tolist(),
        "intercept": np.round(intercept, 5).tolist(),
    }
