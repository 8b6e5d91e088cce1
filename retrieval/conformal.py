"""Split-conformal retrieval (CONFLARE, done with its finite-sample correction).

This is where α becomes a Qdrant score threshold:

    s_i  = 1 − cosine(question_i, best answer-bearing chunk_i)   (+∞ when none is found)
    q̂(α) = the ⌈(n+1)(1−α)⌉-th smallest s_i                      (∞ if that rank exceeds n)
    score_threshold = 1 − q̂(α)

For a new question exchangeable with the n calibration questions, its answer-bearing chunk
has similarity ≥ score_threshold with probability ≥ 1−α (and ≤ 1−α + 1/(n+1) for continuous
scores without misses). The sorted scores are kept, so any α is answered without recomputing.

Relative scale (``RelativeScale``): instead of the cosine, the score can be a chunk's share of
its question's top dense candidates — a softmax over their cosines with a fixed "none of these"
candidate at cosine ``floor``. A question whose best hit stands out keeps one chunk, an
ambiguous one keeps several, and one whose hits all fall below the floor keeps none. It is a
fixed function of the question and the collection, so split conformal's guarantee holds on it
as on the cosine; it passes fewer chunks at the same coverage (docs/conformal.md).

Mondrian (group-conditional) calibration: the scores are also kept per group — the question's
kind (``kind:single``, ``kind:bridge``, ``kind:comparison``, by ``retrieval.kinds``) and a
caller's own group (``group:<name>``) — and a request takes the q̂ of its own group (or the
pooled one if that is larger). The guarantee then holds within that group, not only on
average over the calibration mix. A
group with too few questions for α (or too many misses) falls back to the pooled q̂, and the
response says so and claims no guarantee.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

#: The α a calibration's thresholds are reported at (besides its own default).
REPORTED_ALPHAS = (0.05, 0.1, 0.2)
#: The labelled kinds whose guarantee is round 0's threshold (a multi-hop question's last
#: hop is the link rank's, ``Calibration.links``).
ROUND0_KINDS = ("single", "comparison")
#: Added below 1 − q̂ so a chunk whose similarity ties the calibration score within float32
#: rounding still passes (the store's comparison at the boundary is not exact).
TIE_EPSILON = 1e-6


def conformal_rank(n: int, alpha: float) -> int:
    """⌈(n+1)(1−α)⌉: the rank (1-based) of the calibration score that is q̂."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    # round() guards against (n+1)(1-α) landing a hair above an integer in floating point
    return math.ceil(round((n + 1) * (1 - alpha), 9))


def conformal_quantile(sorted_scores: list[float], alpha: float) -> float:
    """q̂ for ``alpha`` over ascending scores; ``inf`` when no finite threshold attains 1−α."""
    rank = conformal_rank(len(sorted_scores), alpha)
    return math.inf if rank > len(sorted_scores) else sorted_scores[rank - 1]


def naive_quantile(sorted_scores: list[float], alpha: float) -> float:
    """The original CONFLARE rule, kept for comparison: the plain 100(1−α) percentile.

    numpy's default (linear) percentile, as their code uses; no finite-sample correction, so
    it under-covers for small n.
    """
    finite = [s for s in sorted_scores if math.isfinite(s)]  # their code drops misses
    if not finite:
        return math.inf
    pos = (len(finite) - 1) * (1 - alpha)
    lo = math.floor(pos)
    hi = min(lo + 1, len(finite) - 1)
    return finite[lo] + (finite[hi] - finite[lo]) * (pos - lo)


def min_alpha(n: int) -> float:
    """The smallest α with a finite threshold at calibration size n: 1/(n+1)."""
    return 1.0 / (n + 1)


def score_threshold(qhat: float) -> float | None:
    """The similarity a chunk must reach for q̂; ``None`` when q̂ is infinite (no threshold)."""
    return None if math.isinf(qhat) else 1.0 - qhat - TIE_EPSILON


@dataclass(frozen=True, slots=True)
class RelativeScale:
    """A chunk's relative score: its softmax share among the top ``candidates`` dense hits
    and a "none of these" candidate at cosine ``floor``, at ``temperature``.

    The constants are fixed, not fitted to a calibration set (that would break the
    guarantee); they were chosen on the dev set's efficiency (docs/conformal.md). A chunk
    beyond the candidates has no share: a calibration question whose answer chunk lies there
    scores +∞, as a query could not keep it either.
    """

    candidates: int = 10
    temperature: float = 0.05
    floor: float = 0.65

    def shares(self, cosines: Sequence[float]) -> list[float]:
        """Each of the top candidates' share, best first (``cosines`` sorted descending)."""
        top = list(cosines[: self.candidates])
        if not top:
            return []
        peak = max(top[0], self.floor)  # subtracted for a stable exp
        weights = [math.exp((c - peak) / self.temperature) for c in top]
        total = sum(weights) + math.exp((self.floor - peak) / self.temperature)
        return [w / total for w in weights]


@dataclass(frozen=True, slots=True)
class GroupQuantile:
    """The q̂ a request's group gets.

    Attributes:
        group: the group's key (``kind:bridge``, ``group:acme``).
        n: the group's calibration questions.
        qhat: the group's own q̂, or the pooled one when ``fallback``.
        fallback: the group's own q̂ is infinite at this α (too few questions, or too many
            misses): the pooled q̂ applies, with no guarantee for the group.
    """

    group: str
    n: int
    qhat: float
    fallback: bool


@dataclass(frozen=True, slots=True)
class Calibration:
    """A collection's calibration: sorted nonconformity scores plus provenance.

    ``changes_at`` is the collection's change counter when the scores were taken; the
    calibration is stale once the collection has changed by more than a fraction since.
    ``index_builds_at`` counts the collection's index builds then: HNSW search is approximate,
    so a build since changes which chunks a threshold search can miss, and the calibration is
    stale too. ``indexed_at`` is how many chunks were indexed (0: scored on exact search).
    """

    collection: str
    embedder: str
    scores: list[float]
    source: str
    version: int
    changes_at: int
    chunks_at: int
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    misses: int = 0
    skipped: int = 0
    default_alpha: float = 0.1
    index_builds_at: int = 0
    indexed_at: int = 0
    #: Sorted scores per group key (Mondrian calibration); empty for a calibration taken
    #: before groups were kept, whose every group falls back to the pooled q̂.
    groups: dict[str, list[float]] = field(default_factory=dict)
    #: The kind classifier the ``kind:`` groups were formed by (its ``version``): with
    #: another one, questions would be grouped by a different rule than the scores were.
    kinds_version: str = ""
    #: Each calibration question's top-1 similarity and multi-hop score (the shift watch's
    #: reference: live questions should look like these).
    top_similarities: list[float] = field(default_factory=list)
    multi_hop: list[float] = field(default_factory=list)
    #: The same questions scored by a reranker (``retrieval.rerank``): its ``version``, the
    #: dense candidates it reranked, and 1 − relevance of each answer chunk among them, pooled
    #: and per group. Empty when calibrated without one: reranked requests are then refused.
    rerank_version: str = ""
    rerank_candidates: int = 0
    rerank_scores: list[float] = field(default_factory=list)
    rerank_groups: dict[str, list[float]] = field(default_factory=dict)
    #: Per group, the scores of its members of each labelled kind (``"kind:bridge|single"``:
    #: the questions a QA file labels single-hop among those grouped ``kind:bridge``), on
    #: both scales. A group's q̂ is raised to its labelled single-hop and comparison members'
    #: own, so each of those kinds is covered within the group, not only the group's mix.
    labelled: dict[str, list[float]] = field(default_factory=dict)
    rerank_labelled: dict[str, list[float]] = field(default_factory=dict)
    #: The link ranks (``retrieval.links``) of the labelled multi-hop questions in
    #: ``BRIDGE_GROUP``, and the dense hits they start from (0: no link calibration).
    links: list[float] = field(default_factory=list)
    link_from: int = 0
    #: The questions served on the relative scale (``RelativeScale``;
    #: ``retrieval.kinds.relative_keys``: those of a caller's group, or single-hop only) on
    #: it: 1 − the answer chunk's share, pooled, per group and per labelled kind. Empty for a
    #: calibration taken before the scale existed: its requests stay on the cosine.
    relative_scale: RelativeScale | None = None
    relative_scores: list[float] = field(default_factory=list)
    relative_groups: dict[str, list[float]] = field(default_factory=dict)
    relative_labelled: dict[str, list[float]] = field(default_factory=dict)
    #: Each of those questions' best share (the shift watch's reference on that scale).
    relative_top: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def min_alpha(self) -> float:
        return min_alpha(self.n)

    def qhat(self, alpha: float) -> float:
        return conformal_quantile(self.scores, alpha)

    def group_qhat(self, alpha: float, group: str) -> GroupQuantile:
        """q̂ for a request of ``group``: its own when finite, else the pooled one.

        Never below the pooled q̂: a larger q̂ only adds coverage, so the group keeps its
        guarantee, and a group the pooled threshold already over-covers (single-hop
        questions, the bulk of a calibration set) keeps the evidence it always had.
        """
        scores = self.groups.get(group, [])
        own, pooled = conformal_quantile(scores, alpha), self.qhat(alpha)
        if math.isfinite(own):
            own = max([own, *self._kinds_within(group, alpha)])
            return GroupQuantile(group, len(scores), max(own, pooled), fallback=False)
        return GroupQuantile(group, len(scores), pooled, fallback=True)

    def groups_qhat(self, alpha: float, groups: Sequence[str]) -> GroupQuantile:
        """q̂ for a request in every one of ``groups`` (a question's set of kinds): the
        largest of their q̂s, so each group's guarantee holds for it.

        The groups may overlap (a question belongs to each kind in its set, in calibration
        as live), and Mondrian coverage holds within each group, so the largest q̂ covers the
        request in all of them. One group without a finite q̂ of its own makes it a fallback:
        the group it names is that one, as it is why nothing is guaranteed.
        """
        each = [self.group_qhat(alpha, g) for g in groups]
        qhat = max(q.qhat for q in each)
        worst = next((q for q in each if q.fallback), None) or max(each, key=lambda q: q.qhat)
        return GroupQuantile(worst.group, worst.n, qhat, fallback=worst.fallback)

    def _kinds_within(self, group: str, alpha: float) -> list[float]:
        """The finite q̂s of the group's labelled single-hop and comparison members: with
        the largest, each of those kinds keeps 1−α among the group's questions of its kind
        (a kind with too few members for α is covered on the group's average only)."""
        within = (self.labelled.get(f"{group}|{kind}", []) for kind in ROUND0_KINDS)
        return [q for q in (conformal_quantile(s, alpha) for s in within) if math.isfinite(q)]

    def link_quantile(self, alpha: float) -> int | None:
        """k̂: how many linked documents hold a multi-hop question's last hop with
        probability ≥ 1−α (``retrieval.links``); None without enough labelled ones for α."""
        k = conformal_quantile(self.links, alpha)
        return int(k) if math.isfinite(k) else None

    def reranked(self) -> Calibration:
        """This calibration on the reranker's scale: the same questions, groups and
        provenance, its scores 1 − relevance (thresholds are then on relevance)."""
        return self._on_scale(self.rerank_scores, self.rerank_groups, self.rerank_labelled)

    def relative(self) -> Calibration:
        """This calibration on the relative scale (thresholds are then on a chunk's share)."""
        return self._on_scale(self.relative_scores, self.relative_groups, self.relative_labelled)

    def _on_scale(
        self,
        scores: list[float],
        groups: dict[str, list[float]],
        labelled: dict[str, list[float]],
    ) -> Calibration:
        return replace(
            self,
            scores=scores,
            groups=groups,
            labelled=labelled,
            misses=sum(math.isinf(s) for s in scores),
        )

    def coverage_of(self, qhat: float) -> float:
        """Share of calibration scores ≤ q̂ (the in-sample coverage, for reports)."""
        return bisect_right(self.scores, qhat) / self.n if self.n else 0.0

    def is_stale(self, changes_now: int, index_builds_now: int, max_change_fraction: float) -> bool:
        if index_builds_now != self.index_builds_at:
            return True
        changed = changes_now - self.changes_at
        return changed > max_change_fraction * max(self.chunks_at, 1)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["scores"] = _scores_out(self.scores)
        data["rerank_scores"] = _scores_out(self.rerank_scores)
        data["relative_scores"] = _scores_out(self.relative_scores)
        for key in _GROUPED:
            data[key] = {g: _scores_out(s) for g, s in getattr(self, key).items()}
        data["links"] = _scores_out(self.links)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        scale = data.get("relative_scale")
        return cls(
            **{
                **data,
                "scores": _scores_in(data["scores"]),
                "rerank_scores": _scores_in(data.get("rerank_scores", [])),
                "relative_scores": _scores_in(data.get("relative_scores", [])),
                "relative_scale": RelativeScale(**scale) if scale else None,
                "links": _scores_in(data.get("links", [])),
                **{k: {g: _scores_in(s) for g, s in data.get(k, {}).items()} for k in _GROUPED},
            }
        )


#: The ``Calibration`` fields that map a group key to its sorted scores.
_GROUPED = (
    "groups",
    "rerank_groups",
    "labelled",
    "rerank_labelled",
    "relative_groups",
    "relative_labelled",
)


def _scores_out(scores: list[float]) -> list[float | str]:
    return [s if math.isfinite(s) else "inf" for s in scores]


def _scores_in(scores: list[float | str]) -> list[float]:
    return sorted(math.inf if s == "inf" else float(s) for s in scores)
