"""The conformal quantile keeps its promise; the naive percentile does not.

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

from retrieval.conformal import (
    Calibration,
    conformal_quantile,
    conformal_rank,
    min_alpha,
    naive_quantile,
    score_threshold,
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
