"""The conformal quantile keeps its promise; the naive percentile does not; the evaluator is exact.

Coverage is a probability, so the property tests are statistical: each draws many trials with
a numpy generator seeded by hypothesis (derandomized, so every run sees the same examples) and
allows 4.5 standard errors — the suite is deterministic and the bounds are still tight.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.calibration import ItemScore
from retrieval.conformal import (
    Calibration,
    conformal_quantile,
    conformal_rank,
    min_alpha,
    naive_quantile,
    score_threshold,
)
from retrieval.coverage_eval import (
    abstain_signal,
    evaluate_coverage,
    fixed_k_curve,
    resolve_cal_size,
    smallest_k,
    to_markdown,
)

STAT = settings(derandomize=True, deadline=None, max_examples=25, database=None)
Z = 4.5


def _coverage_trials(
    rule: Callable[[list[float], float], float],
    n: int,
    alpha: float,
    trials: int,
    seed: int,
    discrete: bool = False,
) -> float:
    """Share of trials in which a fresh exchangeable score is ≤ q̂ from n calibration scores."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, 5, size=(trials, n + 1)) if discrete else rng.random((trials, n + 1))
    hits = 0
    for row in draws.astype(float):
        hits += row[n] <= rule(sorted(row[:n].tolist()), alpha)
    return hits / trials


def _se(p: float, trials: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-4) / trials)


# -- the quantile --------------------------------------------------------------------------------


@STAT
@given(
    n=st.integers(min_value=1, max_value=150),
    alpha=st.floats(min_value=0.02, max_value=0.5),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_conformal_coverage_is_between_target_and_target_plus_one_over_n(
    n: int, alpha: float, seed: int
) -> None:
    trials = 3000
    observed = _coverage_trials(conformal_quantile, n, alpha, trials, seed)
    exact = min(conformal_rank(n, alpha), n + 1) / (n + 1)  # rank n+1 = q̂ ∞ = always covered
    tol = Z * _se(exact, trials)
    assert observed >= 1 - alpha - tol
    assert observed <= 1 - alpha + 1 / (n + 1) + tol
    assert abs(observed - exact) <= tol  # and exactly k/(n+1) for continuous scores


@STAT
@given(
    n=st.integers(min_value=1, max_value=80),
    alpha=st.floats(min_value=0.02, max_value=0.5),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_conformal_coverage_holds_with_ties(n: int, alpha: float, seed: int) -> None:
    """Ties only add coverage (the upper bound is for continuous scores only)."""
    trials = 1500
    observed = _coverage_trials(conformal_quantile, n, alpha, trials, seed, discrete=True)
    assert observed >= 1 - alpha - Z * _se(1 - alpha, trials)


def test_naive_percentile_under_covers_at_n19() -> None:
    """n=19, α=.1: the linear percentile sits at order statistic 17.2 → E[coverage] = 0.86."""
    trials = 20_000
    naive = _coverage_trials(naive_quantile, 19, 0.1, trials, seed=7)
    conformal = _coverage_trials(conformal_quantile, 19, 0.1, trials, seed=7)
    se = _se(0.86, trials)
    assert abs(naive - (17 + 0.2) / 20) <= Z * se
    assert naive < 0.9 - 10 * se  # a real shortfall of ~0.04, not noise
    assert abs(conformal - 18 / 20) <= Z * _se(0.9, trials)


@given(n=st.integers(min_value=1, max_value=2000), data=st.data())
def test_rank_at_alpha_boundaries(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(min_value=1, max_value=n))
    alpha = k / (n + 1)
    assert conformal_rank(n, alpha) == n + 1 - k  # exactly on k/(n+1): no spurious +1
    assert conformal_rank(n, alpha + 1e-7 / (n + 1)) == n + 1 - k
    assert conformal_rank(n, alpha - 1e-6 / (n + 1)) == n + 2 - k


@given(n=st.integers(min_value=0, max_value=300))
def test_alpha_below_one_over_n_plus_one_gives_infinite_qhat(n: int) -> None:
    scores = sorted(np.random.default_rng(n).random(n).tolist())
    assert math.isinf(conformal_quantile(scores, min_alpha(n) * 0.999))
    if n:
        assert conformal_quantile(scores, min_alpha(n)) == scores[-1]
        assert score_threshold(conformal_quantile(scores, min_alpha(n))) is not None
    assert score_threshold(math.inf) is None


def test_tiny_calibration_sets() -> None:
    assert math.isinf(conformal_quantile([], 0.5))
    assert math.isinf(conformal_quantile([0.3], 0.49))
    assert conformal_quantile([0.3], 0.5) == 0.3
    assert conformal_quantile([0.1, 0.2, 0.3], 0.25) == 0.3  # rank ⌈4·0.75⌉ = 3
    assert conformal_quantile([0.1, 0.2, 0.3], 0.5) == 0.2
    assert math.isinf(conformal_quantile([0.1, math.inf], 0.34))  # rank 2 is a miss
    assert naive_quantile([math.inf, math.inf], 0.1) == math.inf
    with pytest.raises(ValueError):
        conformal_rank(10, 0.0)
    with pytest.raises(ValueError):
        conformal_rank(10, 1.0)


@given(
    scores=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=60),
    a=st.floats(min_value=0.01, max_value=0.99),
    b=st.floats(min_value=0.01, max_value=0.99),
)
def test_qhat_is_monotone_in_alpha(scores: list[float], a: float, b: float) -> None:
    ordered = sorted(scores)
    lo, hi = min(a, b), max(a, b)
    assert conformal_quantile(ordered, lo) >= conformal_quantile(ordered, hi)


# -- the stored calibration -----------------------------------------------------------------------


def _calibration(scores: list[float], **kw: object) -> Calibration:
    base = {
        "collection": "wiki",
        "embedder": "all-MiniLM-L6-v2",
        "scores": sorted(scores),
        "source": "dev.jsonl",
        "version": 1,
        "changes_at": 100,
        "chunks_at": 1000,
        "misses": 1,
    }
    return Calibration(**{**base, **kw})  # type: ignore[arg-type]


@given(
    st.lists(
        st.one_of(st.floats(min_value=-1, max_value=2), st.just(math.inf)), min_size=0, max_size=40
    )
)
def test_calibration_json_round_trip_keeps_infinite_scores(scores: list[float]) -> None:
    cal = _calibration(scores)
    text = json.dumps(cal.to_json(), allow_nan=False)  # strict JSON: ∞ must be encoded
    back = Calibration.from_json(json.loads(text))
    assert back == cal


def test_is_stale_after_a_fraction_changed_or_an_index_build() -> None:
    cal = _calibration([0.1, 0.2])
    assert not cal.is_stale(100, 0, 0.1)
    assert not cal.is_stale(200, 0, 0.1)  # 100 changes of 1000 chunks = exactly 10 %
    assert cal.is_stale(201, 0, 0.1)
    assert cal.is_stale(100, 1, 0.1)  # indexed since: a threshold search may miss what it kept
    empty = _calibration([0.1], chunks_at=0)
    assert empty.is_stale(102, 0, 1.0)  # an empty collection counts as one chunk
    assert cal.coverage_of(0.15) == 0.5


# -- the evaluator ---------------------------------------------------------------------------------


def _item(i: int, rank: int | None, sims: list[float], kind: str = "single") -> ItemScore:
    score = math.inf if rank is None else 1.0 - sims[rank - 1]
    return ItemScore(id=f"q{i}", score=score, rank=rank, similarities=sims, kind=kind)


def _synthetic(n: int, seed: int, width: int = 30) -> list[ItemScore]:
    """Exchangeable items: sorted similarities, answer chunk at a geometric rank; 1 in 50 missed."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        sims = sorted(rng.uniform(0.0, 0.9, width).tolist(), reverse=True)
        rank = min(int(rng.geometric(0.5)), width) if i % 50 else None
        items.append(_item(i, rank, sims))
    return items


def test_fixed_k_from_known_ranks() -> None:
    ranks = np.array([1.0] * 60 + [2.0] * 30 + [5.0] * 9 + [math.inf])
    curve = fixed_k_curve([ranks], max_k=10)
    assert curve[:5].tolist() == pytest.approx([0.6, 0.9, 0.9, 0.9, 0.99])
    assert smallest_k(curve, 0.6) == 1
    assert smallest_k(curve, 0.85) == 2
    assert smallest_k(curve, 0.9) == 2
    assert smallest_k(curve, 0.91) == 5
    assert smallest_k(curve, 1.0) is None  # the miss is never in a top-k


def test_fixed_k_of_a_report_matches_the_ranks() -> None:
    """Answer chunks at rank 1 (score 0.1) or 3 (score 0.3): k and chunks follow from q̂."""
    sims = [0.9, 0.8, 0.7, 0.6, 0.5]
    items = [_item(i, 1 if i % 4 else 3, sims) for i in range(200)]
    report = evaluate_coverage(items, [0.1, 0.4], splits=50, n_cal=100, seed=1)
    by_alpha = {r.alpha: r for r in report.results}
    # 25 % sit at rank 3 with score 0.3: α=.1 needs them, α=.4 does not
    assert by_alpha[0.1].conformal.coverage_mean == 1.0
    assert by_alpha[0.1].fixed_k == 3
    assert by_alpha[0.1].conformal.chunks.mean == 3.0  # every question passes sims ≥ 0.7
    assert by_alpha[0.4].conformal.coverage_mean == pytest.approx(0.75, abs=0.05)
    assert by_alpha[0.4].fixed_k == 1
    assert by_alpha[0.4].conformal.chunks.mean == 1.0


def test_evaluate_coverage_on_synthetic_scores() -> None:
    items = _synthetic(400, seed=3)
    alphas = [0.01, 0.05, 0.1, 0.2]
    report = evaluate_coverage(items, alphas, splits=300, n_cal=19, seed=0)
    assert (report.n_cal, report.n_test, report.misses) == (19, 381, 8)
    low, *rest = report.results
    assert low.conformal is None and low.fixed_k is None  # α=.01 < 1/20: unsupported
    assert low.naive.coverage_mean < 0.99
    for r in rest:
        # 300 splits of 381 test items: the mean is within ~0.01 of its expectation ≥ 1−α
        assert r.conformal.coverage_mean >= r.target - 0.015
        assert r.conformal.coverage_mean >= r.naive.coverage_mean
        assert r.conformal.chunks.mean >= r.naive.chunks.mean
        assert r.conformal.chunks.median <= r.conformal.chunks.p95 <= 30
        assert r.fixed_k is not None and r.fixed_k_coverage >= r.conformal.coverage_mean - 1e-9
    ten = report.results[2]
    assert ten.naive.coverage_mean < 0.9 - 0.02  # CONFLARE's shortfall at n=19
    assert ten.naive.share_below_target > 0 and ten.conformal.share_below_target < 1
    # seeded: the same report twice
    assert evaluate_coverage(items, alphas, splits=300, n_cal=19, seed=0) == report


def test_budget_cut_and_infinite_qhat_are_reported() -> None:
    sims = [0.5] * 10
    items = [_item(i, 10, sims) for i in range(30)] + [_item(30 + i, None, sims) for i in range(30)]
    report = evaluate_coverage(items, [0.2], splits=20, n_cal=None, seed=0, max_chunks=4)
    (r,) = report.results
    assert report.n_cal == 30
    assert r.conformal.infinite_share == 1.0  # half are misses: rank 25 of 30 is ∞
    assert r.conformal.threshold_mean is None
    assert r.conformal.coverage_mean == 1.0
    assert r.conformal.covered_in_budget_mean == 0.0  # rank 10 never fits in 4 chunks
    assert r.conformal.budget_full_rate == 1.0
    assert r.conformal.chunks.mean == 4.0
    assert r.naive.infinite_share == 0.0  # the naive rule drops misses and looks finite
    assert r.naive.coverage_mean == pytest.approx(0.5, abs=0.1)


def test_abstain_signal_counts_empty_contexts() -> None:
    answerable = [_item(i, 1, [0.9 - i / 100, 0.1]) for i in range(10)]  # top 0.90 … 0.81
    negatives = [[0.3, 0.2], [0.85], [], [0.5]]
    signal = abstain_signal(answerable, negatives, qhat=1 - 0.845)
    assert signal.threshold == pytest.approx(0.845)
    assert signal.answerable_empty == pytest.approx(0.4)  # 0.84, 0.83, 0.82, 0.81
    assert signal.unanswerable_empty == pytest.approx(0.75)
    assert (signal.n_answerable, signal.n_unanswerable) == (10, 4)
    everything = abstain_signal(answerable, negatives, qhat=math.inf)
    assert everything.threshold is None
    assert everything.unanswerable_empty == pytest.approx(0.25)  # only the empty hit list


def test_markdown_and_sizes() -> None:
    report = evaluate_coverage(_synthetic(100, seed=1), [0.01, 0.1], splits=5, n_cal=19, seed=0)
    text = to_markdown([report, report])
    assert text.count("#### n_cal = 19") == 2
    assert "unsupported" in text and "| 0.1 | 0.90 |" in text
    assert [resolve_cal_size(t, 342) for t in ("19", "half", "all-but-50")] == [19, 171, 292]
    with pytest.raises(ValueError):
        evaluate_coverage(_synthetic(10, seed=1), [0.1], splits=5, n_cal=10, seed=0)
