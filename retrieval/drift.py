"""Shift watch: do live questions still look like the calibration set?

A calibration's guarantee rests on live questions being exchangeable with its questions. The
watch compares each block of ``window`` live questions with the calibration set, by a
two-sample Kolmogorov–Smirnov test on each of two statistics:

- the top-1 similarity: questions the collection answers worse (unanswerable ones, questions
  about other documents) score lower;
- the multi-hop score (``retrieval.kinds``): a stream of multi-hop questions reads as one.

The b-th block is tested at level δ·6/(π²b²) split over the two tests, so over an unbounded
exchangeable stream the chance of any false alarm is at most δ (a union bound over blocks and
tests; Σ 6/(π²b²) = 1). Once a block alarms the collection stays flagged until it is
recalibrated, which starts a new watch. The watch also reports the share of live requests
where nothing cleared the threshold against the share the calibration set predicts at the
same thresholds, over the requests whose scale the calibration keeps the top scores of (the
cosine and the relative scale; reranked requests are left out of that comparison).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.conformal import Calibration
from retrieval.types import Scale

#: Terms of the Kolmogorov series kept (they vanish long before this for any λ that matters).
_SERIES = np.arange(1, 101)


def ks_pvalue(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(D, p): the two-sample Kolmogorov–Smirnov statistic and its asymptotic p-value
    (Stephens' small-sample correction of λ)."""
    x, y = np.sort(np.asarray(a, dtype=float)), np.sort(np.asarray(b, dtype=float))
    both = np.concatenate([x, y])
    cdf_x = np.searchsorted(x, both, side="right") / len(x)
    cdf_y = np.searchsorted(y, both, side="right") / len(y)
    d = float(np.max(np.abs(cdf_x - cdf_y)))
    n = len(x) * len(y) / (len(x) + len(y))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    p = 2.0 * np.sum((-1.0) ** (_SERIES - 1) * np.exp(-2.0 * _SERIES**2 * lam**2))
    return d, float(min(1.0, max(0.0, p)))


def block_level(false_alarm: float, block: int, tests: int = 2) -> float:
    """The level block ``block`` (1-based) is tested at: δ·6/(π²b²), split over ``tests``."""
    return false_alarm * 6.0 / (math.pi**2 * block**2) / tests


@dataclass(frozen=True, slots=True)
class DriftStatus:
    """What the watch has seen since the calibration.

    Attributes:
        requests: live questions observed.
        window: questions per tested block.
        statistic: the last tested block's larger KS distance (None before a full block).
        p_value: the last tested block's smaller p-value.
        level: the level that block was tested at.
        drifted: a block's p-value fell below its level: live questions do not look like the
            calibration set, so its guarantee may not hold for them.
        drifted_at: how many requests had been observed at the alarm.
        signal: which statistic alarmed (``top_similarity`` or ``multi_hop``).
        live_none_cleared: share of live requests where nothing cleared the threshold (of
            those the calibration set can predict it for).
        predicted_none_cleared: the share the calibration set predicts at the same thresholds.
    """

    requests: int
    window: int
    statistic: float | None
    p_value: float | None
    level: float | None
    drifted: bool
    drifted_at: int | None
    signal: str | None
    live_none_cleared: float | None
    predicted_none_cleared: float | None


class DriftWatch:
    """The shift watch of one calibration (not thread-safe: one event loop feeds it)."""

    def __init__(
        self,
        top_similarities: Sequence[float],
        multi_hop: Sequence[float],
        *,
        window: int,
        false_alarm: float,
        relative_top: Sequence[float] = (),
    ) -> None:
        self._reference = {
            "top_similarity": list(top_similarities),
            "multi_hop": list(multi_hop),
        }
        # each calibration question's best score on each scale a threshold can be on
        self._sorted_top: dict[Scale, list[float]] = {"cosine": sorted(top_similarities)}
        if relative_top:
            self._sorted_top["relative"] = sorted(relative_top)
        self._window = window
        self._false_alarm = false_alarm
        self._block: dict[str, list[float]] = {name: [] for name in self._reference}
        self._blocks = 0
        self._requests = 0
        self._compared = 0
        self._empty = 0
        self._predicted_empty = 0.0
        self._last: tuple[float, float, float] | None = None
        self._alarm: tuple[int, str] | None = None

    def observe(
        self,
        top_similarity: float,
        multi_hop: float,
        threshold: float | None,
        none_cleared: bool,
        scale: Scale = "cosine",
    ) -> None:
        """One live question: its top-1 similarity (whether or not it cleared), its multi-hop
        score, and the threshold it was held against, on ``scale``."""
        self._requests += 1
        tops = self._sorted_top.get(scale)
        if tops:
            self._compared += 1
            self._empty += none_cleared
            if threshold is not None:
                self._predicted_empty += bisect_left(tops, threshold) / len(tops)
        self._block["top_similarity"].append(top_similarity)
        self._block["multi_hop"].append(multi_hop)
        if len(self._block["top_similarity"]) >= self._window:
            self._test_block()

    def _test_block(self) -> None:
        self._blocks += 1
        level = block_level(self._false_alarm, self._blocks, tests=len(self._reference))
        results = {
            name: ks_pvalue(self._reference[name], values) for name, values in self._block.items()
        }
        self._last = (
            max(d for d, _ in results.values()),
            min(p for _, p in results.values()),
            level,
        )
        worst = min(results, key=lambda name: results[name][1])
        if self._alarm is None and results[worst][1] < level:
            self._alarm = (self._requests, worst)
        self._block = {name: [] for name in self._reference}

    @property
    def drifted(self) -> bool:
        return self._alarm is not None

    def status(self) -> DriftStatus:
        statistic, p_value, level = self._last if self._last else (None, None, None)
        return DriftStatus(
            requests=self._requests,
            window=self._window,
            statistic=statistic,
            p_value=p_value,
            level=level,
            drifted=self._alarm is not None,
            drifted_at=self._alarm[0] if self._alarm else None,
            signal=self._alarm[1] if self._alarm else None,
            live_none_cleared=self._empty / self._compared if self._compared else None,
            predicted_none_cleared=(
                self._predicted_empty / self._compared if self._compared else None
            ),
        )


class DriftWatches:
    """One watch per collection, for its current calibration version; a new version (a
    recalibration, a restore) starts a new watch."""

    def __init__(self, *, window: int, false_alarm: float) -> None:
        self._window = window
        self._false_alarm = false_alarm
        #: collection → (calibration version, its watch; None: it keeps no reference)
        self._watches: dict[str, tuple[int, DriftWatch | None]] = {}

    def knows(self, collection: str, version: int) -> bool:
        """Whether calibration ``version`` of ``collection`` was seen (watched or not)."""
        kept = self._watches.get(collection)
        return kept is not None and kept[0] == version

    def current(self, collection: str, version: int) -> DriftWatch | None:
        kept = self._watches.get(collection)
        return kept[1] if kept is not None and kept[0] == version else None

    def start(self, collection: str, calibration: Calibration) -> DriftWatch | None:
        """A new watch of ``calibration``; None for one taken before calibrations kept the
        watch's reference (it is remembered, so it is not looked up again)."""
        watch = (
            DriftWatch(
                calibration.top_similarities,
                calibration.multi_hop,
                window=self._window,
                false_alarm=self._false_alarm,
                relative_top=calibration.relative_top,
            )
            if calibration.top_similarities
            and len(calibration.top_similarities) == len(calibration.multi_hop)
            else None
        )
        self._watches[collection] = (calibration.version, watch)
        return watch

    def forget(self, collection: str) -> None:
        self._watches.pop(collection, None)

    def watched(self) -> list[tuple[str, DriftWatch]]:
        return [(name, watch) for name, (_, watch) in self._watches.items() if watch is not None]
