"""The percentiles every benchmark here reports, rounded alike so their tables compare."""

from __future__ import annotations

import numpy as np


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95 and p99 of ``values`` (ms), to 0.01."""
    return {f"p{p}": round(float(np.percentile(values, p)), 2) for p in (50, 95, 99)}
