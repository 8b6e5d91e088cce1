"""The shift watch: its KS test, its false-alarm budget on exchangeable streams, and how fast
it flags a shifted one — on synthetic streams and on the real classifier's scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ks_2samp

from retrieval.conformal import Calibration
from retrieval.drift import DriftWatch, DriftWatches, block_level, ks_pvalue
from retrieval.kinds import KindClassifier

QA = Path(__file__).resolve().parents[2] / "data" / "qa"


def test_the_ks_test_matches_scipys_asymptotic_one() -> None:
    rng = np.random.default_rng(0)
    for shift in (0.0, 0.3, 1.0):
        a, b = rng.normal(size=86), rng.normal(shift, 1, size=100)
        d, p = ks_pvalue(a, b)
        ref = ks_2samp(a, b, method="asymp")
        assert d == pytest.approx(ref.statistic)
        assert p == pytest.approx(ref.pvalue, abs=0.02)


def test_the_block_levels_spend_at_most_the_false_alarm_budget() -> None:
    spent = sum(block_level(0.01, b, tests=2) * 2 for b in range(1, 100_000))
    assert spent <= 0.01


def _alarm_at(reference: tuple[list[float], list[float]], stream: np.ndarray) -> int | None:
    watch = DriftWatch(*reference, window=100, false_alarm=0.01)
    for top, multi in stream:
        watch.observe(float(top), float(multi), threshold=None, none_cleared=False)
        if watch.drifted:
            return watch.status().drifted_at
    return None


def test_exchangeable_streams_rarely_alarm_and_shifted_ones_do_within_200() -> None:
    rng = np.random.default_rng(1)
    quiet = shifted = 0
    for _ in range(100):
        reference = (rng.normal(0.7, 0.1, 86).tolist(), rng.uniform(0, 1, 86).tolist())
        same = np.column_stack([rng.normal(0.7, 0.1, 2000), rng.uniform(0, 1, 2000)])
        lower = np.column_stack([rng.normal(0.5, 0.1, 200), rng.uniform(0, 1, 200)])
        quiet += _alarm_at(reference, same) is None
        shifted += _alarm_at(reference, lower) is not None
    assert quiet >= 95 and shifted >= 95


def test_a_stream_of_bridge_questions_is_flagged_by_the_real_classifier() -> None:
    """Reference: the demo's calibration questions; live: the test split's questions (new to
    the classifier), all of them or only the bridge ones. Top-1 similarities are drawn alike
    on both sides, so only the multi-hop score can tell."""
    kinds = KindClassifier.load()
    rows = lambda name: [json.loads(x) for x in (QA / name).read_text().splitlines()]  # noqa: E731
    calib = [kinds.multi_hop(r["question"]) for r in rows("calib.jsonl")]
    test = rows("test.jsonl")
    everyone = [kinds.multi_hop(r["question"]) for r in test]
    bridges = [kinds.multi_hop(r["question"]) for r in test if r["type"] == "bridge"]
    rng = np.random.default_rng(2)
    quiet = flagged = 0
    for _ in range(50):
        reference = (rng.normal(0.7, 0.1, len(calib)).tolist(), calib)
        same = np.column_stack([rng.normal(0.7, 0.1, 2000), rng.choice(everyone, 2000)])
        multi = np.column_stack([rng.normal(0.7, 0.1, 200), rng.choice(bridges, 200)])
        quiet += _alarm_at(reference, same) is None
        flagged += _alarm_at(reference, multi) is not None
    assert quiet >= 47 and flagged >= 47


def test_the_none_cleared_share_is_compared_with_the_calibrations_prediction() -> None:
    watch = DriftWatch([0.1 * i for i in range(1, 10)], [0.5] * 9, window=10, false_alarm=0.01)
    assert watch.status().live_none_cleared is None
    watch.observe(0.3, 0.5, threshold=0.45, none_cleared=True)  # 4 of 9 below 0.45
    watch.observe(0.8, 0.5, threshold=0.65, none_cleared=False)  # 6 of 9 below 0.65
    status = watch.status()
    assert status.requests == 2 and status.statistic is None and not status.drifted
    assert status.live_none_cleared == 0.5
    assert status.predicted_none_cleared == pytest.approx((4 / 9 + 6 / 9) / 2)


def test_the_none_cleared_share_is_predicted_on_the_requests_scale() -> None:
    watch = DriftWatch(
        [0.1 * i for i in range(1, 10)],
        [0.5] * 9,
        window=10,
        false_alarm=0.01,
        relative_top=[0.2, 0.4, 0.6, 0.8],
    )
    watch.observe(0.3, 0.5, threshold=0.5, none_cleared=True, scale="relative")  # 2 of 4
    # the calibration keeps no reranked top scores: not part of the comparison
    watch.observe(0.3, 0.5, threshold=0.9, none_cleared=True, scale="rerank")
    status = watch.status()
    assert status.requests == 2
    assert status.live_none_cleared == 1.0
    assert status.predicted_none_cleared == pytest.approx(0.5)


def test_a_new_calibration_version_starts_a_new_watch() -> None:
    def calibration(version: int, reference: bool) -> Calibration:
        sims = [0.5, 0.6] if reference else []
        return Calibration(
            "c", "m", [0.4, 0.5], "test", version, 0, 1,
            top_similarities=sims, multi_hop=[0.1, 0.2] if reference else [],
        )  # fmt: skip

    watches = DriftWatches(window=10, false_alarm=0.01)
    assert not watches.knows("c", 1) and watches.current("c", 1) is None
    first = watches.start("c", calibration(1, reference=True))
    assert first is not None and watches.current("c", 1) is first
    assert watches.current("c", 2) is None and not watches.knows("c", 2)
    assert watches.start("c", calibration(2, reference=False)) is None  # taken before the watch
    assert watches.knows("c", 2) and watches.current("c", 2) is None
    assert watches.watched() == []
    watches.forget("c")
    assert not watches.knows("c", 2)
