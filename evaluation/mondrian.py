"""Mondrian (group-conditional) thresholds against the pooled one, per true question kind.

The pooled guarantee of ``evaluation.coverage`` holds over all questions; a request also gets
the largest of its groups' own q̂ (``Calibration.groups_qhat``: each raised to its labelled
single-hop and comparison members' q̂) and, when it may be multi-hop, the top
``LINK_FROM`` hits and k̂ linked documents (``Calibration.link_quantile``). It is flagged
``coverage_guaranteed`` when each is finite and the budget cuts nothing. This checks, on the
same kind of seeded splits, what that buys each kind and whether the flag is honest. Pure
computation, numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.coverage import cleared_counts, similarity_matrix
from retrieval.calibration_set import ItemScore
from retrieval.conformal import ROUND0_KINDS, conformal_quantile
from retrieval.kinds import BRIDGE_GROUP, relative_keys
from retrieval.links import LINK_FROM


@dataclass(frozen=True, slots=True)
class GroupCoverage:
    """Pooled and Mondrian thresholds side by side for the held-out questions of one true
    kind at one α, over the same splits.

    ``*_coverage`` are means over splits of the kind's test coverage; ``*_chunks`` the mean
    chunks clearing the threshold (capped at the budget). ``guaranteed_share`` is the share of
    the kind's test questions the response would flag ``coverage_guaranteed`` (their predicted
    group has its own finite q̂ and the budget cuts nothing), ``guaranteed_coverage`` the
    coverage among those (None when none is flagged).
    """

    kind: str
    alpha: float
    n: int
    pooled_coverage: float
    pooled_chunks: float
    mondrian_coverage: float
    mondrian_chunks: float
    guaranteed_share: float
    guaranteed_coverage: float | None


def evaluate_mondrian(
    scores: Sequence[ItemScore],
    groups: Sequence[tuple[str, ...]],
    alphas: Sequence[float],
    *,
    links: Sequence[float],
    splits: int,
    seed: int,
    max_chunks: int,
    relative: Sequence[ItemScore] | None = None,
) -> list[GroupCoverage]:
    """Per true kind (``ItemScore.kind``): the pooled q̂ against each question's groups' q̂
    (``groups``: the group keys a request of that question would get, a calibration question
    counting in each of its own), as ``Calibration.groups_qhat`` takes it — the largest of
    them, never below the pooled q̂, and not flagged when one group's own is infinite — on
    half/half calibration/test splits. A question that may be multi-hop (``BRIDGE_GROUP``)
    is covered when its score clears or its link rank (``links``, ``retrieval.links``) is at
    most the calibration's k̂, and is flagged only when k̂ is finite; its chunks are counted
    as at most max(cleared, ``LINK_FROM``) + k̂. With ``relative`` (the same questions on the
    relative scale), a question all of whose groups are served on it
    (``retrieval.kinds.relative_keys``) is thresholded there, its groups calibrated on the
    calibration questions served there, as a query with ``COVRAG_CONFORMAL_SCORE=relative``
    is."""
    cosine = _Scale.of(scores, groups, [set(gs) for gs in groups])
    served = [relative_keys(gs) for gs in groups]
    on_relative = np.array(
        [relative is not None and keys == set(gs) for keys, gs in zip(served, groups, strict=True)]
    )
    scaled = cosine if relative is None else _Scale.of(relative, groups, served)
    kinds = np.array([s.kind or "untyped" for s in scores])
    multi_hop = np.array([BRIDGE_GROUP in gs for gs in groups], dtype=bool)
    link_arr = np.array(links, dtype=float)
    bridge_labelled = multi_hop & (kinds == "bridge")
    rng = np.random.default_rng(seed)
    parts = [rng.permutation(len(scores)) for _ in range(splits)]
    rows: list[GroupCoverage] = []
    for alpha in alphas:
        per_kind: dict[str, dict[str, list[float]]] = {}
        for part in parts:
            cal, test = part[: len(part) // 2], part[len(part) // 2 :]
            pooled = conformal_quantile(sorted(cosine.scores[cal].tolist()), alpha)
            on_cos = cosine.thresholds(cal, test, kinds, alpha)
            on_rel = on_cos if scaled is cosine else scaled.thresholds(cal, test, kinds, alpha)
            rel = on_relative[test]
            qhat = np.where(rel, on_rel[0], on_cos[0])
            own = np.where(rel, on_rel[1], on_cos[1])
            score_arr = np.where(rel, scaled.scores[test], cosine.scores[test])
            k = conformal_quantile(sorted(link_arr[cal][bridge_labelled[cal]]), alpha)
            linked = multi_hop[test] & math.isfinite(k)
            covered = (score_arr <= qhat) | (linked & (link_arr[test] <= k))
            cleared = np.array(
                [
                    cleared_counts((scaled if r else cosine).sims[[i]], q)[0]
                    for i, q, r in zip(test, qhat, rel, strict=True)
                ]
            )
            if math.isfinite(k):
                cleared = np.where(linked, np.maximum(cleared, LINK_FROM) + int(k), cleared)
            flagged = (
                own
                & np.isfinite(qhat)
                & (cleared <= max_chunks)
                & (~multi_hop[test] | math.isfinite(k))
            )
            pooled_cleared = cleared_counts(cosine.sims[test], pooled)
            for kind in set(kinds[test].tolist()):
                at = kinds[test] == kind
                stats = per_kind.setdefault(kind, {})
                stats.setdefault("pooled", []).append(
                    float((cosine.scores[test][at] <= pooled).mean())
                )
                stats.setdefault("pooled_chunks", []).extend(
                    np.minimum(pooled_cleared[at], max_chunks).tolist()
                )
                stats.setdefault("mondrian", []).append(float(covered[at].mean()))
                stats.setdefault("chunks", []).extend(np.minimum(cleared[at], max_chunks).tolist())
                stats.setdefault("flagged", []).extend(flagged[at].tolist())
                stats.setdefault("flagged_covered", []).extend(covered[at][flagged[at]].tolist())
        for kind, stats in sorted(per_kind.items()):
            hit = stats["flagged_covered"]
            rows.append(
                GroupCoverage(
                    kind=kind,
                    alpha=alpha,
                    n=int((kinds == kind).sum()),
                    pooled_coverage=float(np.mean(stats["pooled"])),
                    pooled_chunks=float(np.mean(stats["pooled_chunks"])),
                    mondrian_coverage=float(np.mean(stats["mondrian"])),
                    mondrian_chunks=float(np.mean(stats["chunks"])),
                    guaranteed_share=float(np.mean(stats["flagged"])),
                    guaranteed_coverage=float(np.mean(hit)) if hit else None,
                )
            )
    return rows


@dataclass(frozen=True, slots=True)
class _Scale:
    """The questions' scores on one scale, and who counts in each group's calibration there
    (``counts``) beside who a request of each group is (``member``)."""

    scores: np.ndarray
    sims: np.ndarray
    keys: list[str]
    member: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(
        cls,
        scores: Sequence[ItemScore],
        groups: Sequence[tuple[str, ...]],
        counted: Sequence[set[str]],
    ) -> _Scale:
        keys = sorted({g for gs in groups for g in gs})

        def matrix(sets: Sequence[Iterable[str]]) -> np.ndarray:
            rows = [[g in set(gs) for g in keys] for gs in sets]
            return np.array(rows, dtype=bool).reshape(-1, len(keys))

        return cls(
            scores=np.array([s.score for s in scores], dtype=float),
            sims=similarity_matrix(scores),
            keys=keys,
            member=matrix(groups),
            counts=matrix(counted),
        )

    def thresholds(
        self, cal: np.ndarray, test: np.ndarray, kinds: np.ndarray, alpha: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(q̂, own) per test question: the largest of its groups' q̂s (each raised to its
        labelled single-hop and comparison members' own), never below the pooled one (over
        the calibration questions served on this scale); own is false when one of its groups
        has no finite q̂ of its own."""
        served = self.counts[cal].any(axis=1)  # the pooled q̂ is over those served here
        pooled = conformal_quantile(sorted(self.scores[cal][served].tolist()), alpha)
        qhat = np.full(len(test), pooled)
        own = np.ones(len(test), dtype=bool)
        for g in range(len(self.keys)):
            at, members = self.member[test, g], self.counts[cal, g]
            q = conformal_quantile(sorted(self.scores[cal][members]), alpha)
            if not math.isfinite(q):
                own[at] = False
                continue
            for kind in ROUND0_KINDS:
                labelled = members & (kinds[cal] == kind)
                q_kind = conformal_quantile(sorted(self.scores[cal][labelled]), alpha)
                q = max(q, q_kind) if math.isfinite(q_kind) else q
            qhat[at] = np.maximum(qhat[at], q)
        return qhat, own


def mondrian_markdown(rows: Sequence[GroupCoverage]) -> str:
    lines = [
        "| true kind | n | α | pooled coverage | pooled chunks | Mondrian coverage | "
        "Mondrian chunks | flagged guaranteed | coverage where flagged |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        flagged = "—" if r.guaranteed_coverage is None else f"{r.guaranteed_coverage:.3f}"
        lines.append(
            f"| {r.kind} | {r.n} | {r.alpha:g} | {r.pooled_coverage:.3f} | "
            f"{r.pooled_chunks:.1f} | {r.mondrian_coverage:.3f} | {r.mondrian_chunks:.1f} | "
            f"{r.guaranteed_share:.0%} | {flagged} |"
        )
    return "\n".join(lines)
