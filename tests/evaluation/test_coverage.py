"""The coverage evaluator (``covrag eval coverage``) is exact: fixed top-k, splits, the budget
cut, the abstain signal and the tables, on synthetic scores whose answers are known."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from evaluation.coverage import (
    abstain_signal,
    evaluate_coverage,
    fixed_k_curve,
    resolve_cal_size,
    smallest_k,
    to_markdown,
)
from evaluation.mondrian import evaluate_mondrian, mondrian_markdown
from retrieval.calibration_set import ItemScore, on_relative_scale
from retrieval.conformal import RelativeScale
from retrieval.links import LINK_FROM


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


#: No question has a calibrated second hop (``evaluate_mondrian``'s ``links``).
_NO_LINKS: dict[str, Any] = {"links": [math.inf] * 360, "splits": 20, "seed": 1}


def test_mondrian_covers_a_hard_kind_the_pooled_threshold_misses() -> None:
    """Easy questions (answer at rank 1, high similarity) and hard ones (answer at rank 5,
    low similarity): the pooled q̂ at α = 0.1 misses most hard ones; the hard group's own q̂
    covers them, and the easy group keeps the pooled q̂ (never tighter)."""
    rng = np.random.default_rng(0)
    easy = [
        _item(i, 1, sorted([*rng.uniform(0.0, 0.6, 20).tolist(), 0.9], reverse=True), "single")
        for i in range(300)
    ]
    hard = [
        _item(i, 5, sorted(rng.uniform(0.0, 0.5, 20).tolist(), reverse=True), "bridge")
        for i in range(300, 360)
    ]
    items = easy + hard
    groups = [("group:easy",)] * 300 + [("group:hard",)] * 60
    rows = {r.kind: r for r in evaluate_mondrian(items, groups, [0.1], **_NO_LINKS, max_chunks=30)}
    assert rows["bridge"].pooled_coverage < 0.5 <= 0.9 - 0.02 <= rows["bridge"].mondrian_coverage
    assert rows["bridge"].guaranteed_share == 1.0
    assert rows["single"].mondrian_coverage == rows["single"].pooled_coverage
    assert rows["single"].mondrian_chunks == rows["single"].pooled_chunks
    # a budget smaller than the hard answers' rank: a covered one is never flagged
    tight = {r.kind: r for r in evaluate_mondrian(items, groups, [0.1], **_NO_LINKS, max_chunks=3)}
    assert tight["bridge"].guaranteed_share < 0.05
    assert tight["bridge"].guaranteed_coverage in (None, 0.0)
    assert "| bridge | 60 | 0.1 |" in mondrian_markdown(list(rows.values()))
    # a tenth of the easy questions also in the hard group (a kinds set of two): those take
    # the hard group's q̂, the rest of the easy ones keep the pooled one
    shared = [("group:easy", "group:hard") if i % 10 == 0 else g for i, g in enumerate(groups)]
    mixed = {r.kind: r for r in evaluate_mondrian(items, shared, [0.1], **_NO_LINKS, max_chunks=30)}
    assert mixed["single"].mondrian_chunks > rows["single"].mondrian_chunks
    # the hard group's guarantee is over its members, easy ones included: the hard kind alone
    # gets a little less than 1 − α, still far above the pooled q̂'s
    assert mixed["bridge"].pooled_coverage < 0.5 < 0.8 < mixed["bridge"].mondrian_coverage


def _hard_and_easy(hard_kind: str) -> list[ItemScore]:
    """300 easy single-hop questions (answer at rank 1) and 60 hard ones of ``hard_kind``
    (rank 5, low similarity)."""
    rng = np.random.default_rng(0)
    easy = [
        _item(i, 1, sorted([*rng.uniform(0.0, 0.6, 20).tolist(), 0.9], reverse=True), "single")
        for i in range(300)
    ]
    hard = [
        _item(i, 5, sorted(rng.uniform(0.0, 0.5, 20).tolist(), reverse=True), hard_kind)
        for i in range(300, 360)
    ]
    return easy + hard


def test_a_multi_hop_question_is_flagged_only_with_calibrated_links() -> None:
    """A question that may be multi-hop is flagged only when the labelled multi-hop
    questions' link ranks have a finite k̂; it is then covered when its rank is within k̂,
    and its context holds at least ``LINK_FROM`` + k̂ chunks."""
    items = _hard_and_easy("bridge")
    kinds = [("kind:single",)] * 300 + [("kind:bridge",)] * 60
    never = {r.kind: r for r in evaluate_mondrian(items, kinds, [0.1], **_NO_LINKS, max_chunks=30)}
    assert never["bridge"].guaranteed_share == 0.0 < never["single"].guaranteed_share
    # the second hop is the first linked document for all but every twentieth question
    hops = [0.0] * 300 + [math.inf if i % 20 == 0 else 1.0 for i in range(60)]
    linked = {
        r.kind: r
        for r in evaluate_mondrian(
            items, kinds, [0.1], links=hops, splits=20, seed=1, max_chunks=30
        )
    }
    # flagged in the splits whose calibration half holds at most two of the three unnamed
    assert linked["bridge"].guaranteed_share > 0.5
    assert linked["bridge"].guaranteed_coverage is not None
    assert linked["bridge"].guaranteed_coverage >= 0.95 > never["bridge"].mondrian_coverage
    assert linked["bridge"].mondrian_chunks >= LINK_FROM + 1
    assert linked["single"].mondrian_chunks == never["single"].mondrian_chunks
    # a budget the linked documents do not fit: nothing multi-hop is flagged
    tight = evaluate_mondrian(items, kinds, [0.1], links=hops, splits=20, seed=1, max_chunks=5)
    assert next(r for r in tight if r.kind == "bridge").guaranteed_share == 0.0


def test_a_labelled_kind_keeps_its_coverage_inside_a_mixed_group() -> None:
    """A group whose easy members (single-hop, half of the group) are covered anyway gives its
    hard comparison members less than 1 − α; the labelled comparisons' own q̂ restores it.
    A labelled multi-hop kind does not raise round 0's q̂ (its guarantee is the links')."""
    groups = [("kind:comparison",) if i % 5 == 0 else ("kind:single",) for i in range(300)]
    groups += [("kind:comparison",)] * 60
    comparison = {
        r.kind: r
        for r in evaluate_mondrian(
            _hard_and_easy("comparison"), groups, [0.1], **_NO_LINKS, max_chunks=30
        )
    }
    assert comparison["comparison"].mondrian_coverage >= 0.9 - 0.02
    bridge = {
        r.kind: r
        for r in evaluate_mondrian(
            _hard_and_easy("bridge"), groups, [0.1], **_NO_LINKS, max_chunks=30
        )
    }
    assert bridge["bridge"].mondrian_coverage < comparison["comparison"].mondrian_coverage


def test_the_relative_scale_serves_single_hop_only_questions_and_keeps_their_guarantee() -> None:
    """Questions whose set is ``kind:single`` alone are thresholded on their chunks' shares
    (calibrated on those questions only); the others stay on the cosine, unchanged."""
    rng = np.random.default_rng(3)
    # answer at rank 1 or 2; a runner-up far behind when it is first, close when it is not
    easy = []
    for i in range(300):
        rest = sorted(rng.uniform(0.2, 0.55, 20).tolist(), reverse=True)
        top = float(rng.uniform(0.6, 0.9))
        rank = 1 if i % 5 else 2
        sims = [top, top - 0.02, *rest] if rank == 2 else [top, *rest]
        easy.append(_item(i, rank, sims, "single"))
    hard = [
        _item(i, 5, sorted(rng.uniform(0.0, 0.5, 20).tolist(), reverse=True), "comparison")
        for i in range(300, 360)
    ]
    items = easy + hard
    groups = [("kind:single",)] * 300 + [("kind:comparison",)] * 60
    relative = [on_relative_scale(s, RelativeScale()) for s in items]
    plain = {r.kind: r for r in evaluate_mondrian(items, groups, [0.1], **_NO_LINKS, max_chunks=30)}
    both = {
        r.kind: r
        for r in evaluate_mondrian(
            items, groups, [0.1], **_NO_LINKS, max_chunks=30, relative=relative
        )
    }
    assert both["comparison"] == plain["comparison"]
    assert both["single"].mondrian_coverage >= 0.9 - 0.02
    assert both["single"].guaranteed_coverage is not None
    assert both["single"].guaranteed_coverage >= 0.9 - 0.02
    assert both["single"].mondrian_chunks < plain["single"].mondrian_chunks
