"""Does the conformal threshold keep its promise? Repeated calibration/test splits of scored QA.

The guarantee of ``retrieval.conformal`` is marginal over the draw of the calibration set, so a
single split proves little: this module re-splits the scored questions many times (seeded) and
reports, per α, how often the answer-bearing chunk of a *held-out* question clears the threshold
(coverage), how many chunks the threshold lets through (the price of that coverage), and the same
for CONFLARE's uncorrected percentile, side by side. The baseline it must beat is a fixed top-k:
the smallest k whose mean coverage reaches the conformal one.

Pure computation (numpy only, no I/O): the CLI scores the questions once and calls in here;
the group-conditional (Mondrian) check is ``evaluation.mondrian``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.calibration_set import ItemScore
from retrieval.conformal import (
    conformal_quantile,
    conformal_rank,
    naive_quantile,
    score_threshold,
)

#: Slack for comparing a split's coverage (a ratio of counts) with 1−α in floating point.
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class ChunkStats:
    """Chunks handed to the generator per test question, pooled over splits."""

    mean: float
    median: float
    p95: float


@dataclass(frozen=True, slots=True)
class RuleSummary:
    """One threshold rule at one α, aggregated over the splits.

    ``coverage_*`` is over splits of the per-split test coverage (answer chunk's score ≤ q̂);
    ``coverage_se`` = sd/√splits, the Monte-Carlo error of the mean (splits are independent).
    ``covered_in_budget_mean`` also requires that chunk to fit in the first ``max_chunks``: when
    more chunks clear the threshold than the context holds, the guarantee is lost, and
    ``budget_full_rate`` counts how often that can happen (≥ ``max_chunks`` chunks clear; the top
    hits cannot tell whether one more would).
    """

    coverage_mean: float
    coverage_sd: float
    coverage_se: float
    share_below_target: float
    covered_in_budget_mean: float
    chunks: ChunkStats
    budget_full_rate: float
    infinite_share: float
    threshold_mean: float | None


@dataclass(frozen=True, slots=True)
class AlphaResult:
    """Conformal vs naive at one α, and the fixed top-k that matches the conformal coverage.

    ``conformal`` is ``None`` when α < 1/(n_cal+1): no finite threshold can promise 1−α with that
    few calibration questions, which is a fact to report, not an error. ``fixed_k`` is ``None``
    when no k up to the budget reaches the coverage (or the conformal rule is unsupported).
    """

    alpha: float
    target: float
    conformal: RuleSummary | None
    naive: RuleSummary
    fixed_k: int | None
    fixed_k_coverage: float | None


@dataclass(frozen=True, slots=True)
class CoverageReport:
    """All α for one calibration size."""

    n_items: int
    n_cal: int
    n_test: int
    splits: int
    seed: int
    max_chunks: int
    misses: int
    results: tuple[AlphaResult, ...]


@dataclass(frozen=True, slots=True)
class AbstainSignal:
    """Share of questions for which no chunk clears 1−q̂, i.e. the filter leaves nothing.

    An empty context is the conformal filter's built-in abstain signal; it is only useful if it
    fires for unanswerable questions and rarely for answerable ones.
    """

    qhat: float
    threshold: float | None
    answerable_empty: float
    unanswerable_empty: float
    n_answerable: int
    n_unanswerable: int


def resolve_cal_size(token: str, n_items: int) -> int:
    """``"19"`` → 19, ``"half"`` → n//2, ``"all-but-50"`` → n−50 (calibration-size syntax)."""
    token = token.strip().lower()
    if token == "half":
        return n_items // 2
    if token.startswith("all-but-"):
        return n_items - int(token.removeprefix("all-but-"))
    return int(token)


def similarity_matrix(scores: Sequence[ItemScore]) -> np.ndarray:
    """Top-hit similarities as a rectangle, padded with −∞ (a padded slot never clears)."""
    width = max((len(s.similarities) for s in scores), default=0)
    sims = np.full((len(scores), width), -np.inf)
    for i, s in enumerate(scores):
        sims[i, : len(s.similarities)] = s.similarities
    return sims


def cleared_counts(sims: np.ndarray, qhat: float) -> np.ndarray:
    """Chunks per row whose similarity clears 1−q̂ (with the store's tie epsilon)."""
    threshold = score_threshold(qhat)
    passes = np.isfinite(sims) if threshold is None else sims >= threshold  # q̂ = ∞: all pass
    counts: np.ndarray = passes.sum(axis=1)
    return counts


def fixed_k_curve(test_ranks: Sequence[np.ndarray], max_k: int) -> np.ndarray:
    """Mean over splits of the top-k coverage on each split's test set, for k = 1..max_k.

    Ranks are 1-based; ``inf`` marks an answer chunk beyond the hits (never covered by top-k).
    """
    ks = np.arange(1, max_k + 1)
    curves = [np.searchsorted(np.sort(r), ks, side="right") / max(len(r), 1) for r in test_ranks]
    return np.mean(curves, axis=0) if curves else np.zeros(max_k)


def smallest_k(curve: np.ndarray, target: float) -> int | None:
    """The smallest k (1-based) whose coverage in ``curve`` reaches ``target``, else ``None``."""
    reached = np.flatnonzero(curve >= target - _EPS)
    return int(reached[0]) + 1 if reached.size else None


def _summarize(
    coverages: list[float],
    in_budget: list[float],
    counts: list[np.ndarray],
    full: list[float],
    qhats: list[float],
    target: float,
) -> RuleSummary:
    cov = np.asarray(coverages)
    sd = float(cov.std(ddof=1)) if cov.size > 1 else 0.0
    passed = np.concatenate(counts) if counts else np.zeros(0)
    finite = [1.0 - q for q in qhats if math.isfinite(q)]
    return RuleSummary(
        coverage_mean=float(cov.mean()),
        coverage_sd=sd,
        coverage_se=sd / math.sqrt(cov.size),
        share_below_target=float(np.mean(cov < target - _EPS)),
        covered_in_budget_mean=float(np.mean(in_budget)),
        chunks=ChunkStats(
            mean=float(passed.mean()) if passed.size else 0.0,
            median=float(np.median(passed)) if passed.size else 0.0,
            p95=float(np.percentile(passed, 95)) if passed.size else 0.0,
        ),
        budget_full_rate=float(np.mean(full)),
        infinite_share=float(np.mean([math.isinf(q) for q in qhats])),
        threshold_mean=float(np.mean(finite)) if finite else None,
    )


def evaluate_coverage(
    scores: Sequence[ItemScore],
    alphas: Sequence[float],
    *,
    splits: int,
    n_cal: int | None,
    seed: int,
    max_chunks: int = 100,
) -> CoverageReport:
    """Coverage and cost of the conformal and naive thresholds over ``splits`` random splits.

    Each split draws ``n_cal`` calibration questions (default: half) and tests on the rest; the
    same splits serve every α and both rules, so their differences are paired. A question's
    chunks passed = its top similarities that clear 1−q̂, capped at ``max_chunks``.
    """
    n_items = len(scores)
    n_cal = n_items // 2 if n_cal is None else n_cal
    if not 1 <= n_cal < n_items:
        raise ValueError(f"n_cal must lie in [1, {n_items - 1}], got {n_cal}")
    if splits < 1:
        raise ValueError(f"splits must be ≥ 1, got {splits}")
    score_arr = np.array([s.score for s in scores], dtype=float)
    rank_arr = np.array([np.inf if s.rank is None else s.rank for s in scores], dtype=float)
    sims = similarity_matrix(scores)
    max_k = max(1, min(max_chunks, sims.shape[1]))

    rng = np.random.default_rng(seed)
    parts = [rng.permutation(n_items) for _ in range(splits)]
    cal_sorted = [sorted(score_arr[p[:n_cal]].tolist()) for p in parts]
    test_idx = [p[n_cal:] for p in parts]
    test_ranks = [rank_arr[t] for t in test_idx]
    curve = fixed_k_curve(test_ranks, max_k)

    results = []
    for alpha in alphas:
        target = 1.0 - alpha
        supported = conformal_rank(n_cal, alpha) <= n_cal
        rules = {"conformal": conformal_quantile, "naive": naive_quantile}
        summaries: dict[str, RuleSummary] = {}
        for name, rule in rules.items():
            if name == "conformal" and not supported:
                continue
            coverages, in_budget, counts, full, qhats = [], [], [], [], []
            for cal, test, ranks in zip(cal_sorted, test_idx, test_ranks, strict=True):
                qhat = rule(cal, alpha)
                covered = score_arr[test] <= qhat
                cleared = cleared_counts(sims[test], qhat)
                coverages.append(float(covered.mean()))
                in_budget.append(float((covered & (ranks <= max_chunks)).mean()))
                counts.append(np.minimum(cleared, max_chunks))
                full.append(float((cleared >= max_chunks).mean()))
                qhats.append(qhat)
            summaries[name] = _summarize(coverages, in_budget, counts, full, qhats, target)
        conformal = summaries.get("conformal")
        k = smallest_k(curve, conformal.coverage_mean) if conformal else None
        results.append(
            AlphaResult(
                alpha=alpha,
                target=target,
                conformal=conformal,
                naive=summaries["naive"],
                fixed_k=k,
                fixed_k_coverage=float(curve[k - 1]) if k else None,
            )
        )
    return CoverageReport(
        n_items=n_items,
        n_cal=n_cal,
        n_test=n_items - n_cal,
        splits=splits,
        seed=seed,
        max_chunks=max_chunks,
        misses=int(np.isinf(score_arr).sum()),
        results=tuple(results),
    )


def _empty_rate(sims: Sequence[Sequence[float]], threshold: float | None) -> float:
    if not sims:
        return math.nan
    if threshold is None:
        return float(np.mean([len(s) == 0 for s in sims]))
    return float(np.mean([not s or max(s) < threshold for s in sims]))


def abstain_signal(
    answerable: Sequence[ItemScore], unanswerable_sims: Sequence[Sequence[float]], qhat: float
) -> AbstainSignal:
    """How often the threshold 1−q̂ leaves an empty context, answerable vs unanswerable.

    Unanswerable questions have no gold chunk, so only their top similarities matter.
    """
    threshold = score_threshold(qhat)
    return AbstainSignal(
        qhat=qhat,
        threshold=None if math.isinf(qhat) else 1.0 - qhat,
        answerable_empty=_empty_rate([s.similarities for s in answerable], threshold),
        unanswerable_empty=_empty_rate(unanswerable_sims, threshold),
        n_answerable=len(answerable),
        n_unanswerable=len(unanswerable_sims),
    )


def _pm(summary: RuleSummary | None) -> str:
    if summary is None:
        return "unsupported"
    return f"{summary.coverage_mean:.3f} ± {summary.coverage_sd:.3f}"


def _share(summary: RuleSummary | None) -> str:
    return "—" if summary is None else f"{summary.share_below_target:.2f}"


def _chunks(summary: RuleSummary | None) -> str:
    if summary is None:
        return "—"
    c = summary.chunks
    return f"{c.mean:.1f} / {c.median:g} / {c.p95:g}"


def _fixed(result: AlphaResult) -> str:
    if result.conformal is None:
        return "—"
    if result.fixed_k is None:
        return "not reached"
    return f"{result.fixed_k} ({result.fixed_k_coverage:.3f})"


def report_markdown(report: CoverageReport) -> str:
    """One table: the rows a reader needs to check the guarantee and its price at one n_cal."""
    lines = [
        f"#### n_cal = {report.n_cal} (test {report.n_test} of {report.n_items}; "
        f"{report.splits} splits, seed {report.seed}; misses {report.misses}; "
        f"budget {report.max_chunks} chunks)",
        "",
        "| α | target | conformal mean ± sd | splits below | naive mean ± sd | naive below "
        "| chunks conformal mean / median / p95 | chunks naive mean | fixed top-k (its coverage) "
        "| budget full conformal / naive |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.results:
        full = "—" if r.conformal is None else f"{r.conformal.budget_full_rate:.3f}"
        lines.append(
            f"| {r.alpha:g} | {r.target:.2f} | {_pm(r.conformal)} | {_share(r.conformal)} "
            f"| {_pm(r.naive)} | {_share(r.naive)} | {_chunks(r.conformal)} "
            f"| {r.naive.chunks.mean:.1f} | {_fixed(r)} | {full} / {r.naive.budget_full_rate:.3f} |"
        )
    return "\n".join(lines)


def to_markdown(reports: CoverageReport | Sequence[CoverageReport]) -> str:
    """A table per calibration size, in the order given."""
    if isinstance(reports, CoverageReport):
        reports = [reports]
    return "\n\n".join(report_markdown(r) for r in reports)
