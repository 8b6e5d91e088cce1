"""The shift watch's false-alarm rate and detection delay on real questions over `wiki`.

    COVRAG_DATA_DIR=… python -m bench.drift [--runs 200] [--window 100]

The reference is the demo's calibration set (data/qa/calib.jsonl); each run streams questions
drawn with replacement from one pool: exchangeable (test.jsonl, whose questions the kind
classifier never saw), only its bridge questions, or only unanswerable ones. Reports the share of
runs that raise an alarm within 2,000 exchangeable requests and within 200 shifted ones, with
the median request count at the alarm. Writes bench/results/drift.json and prints a markdown
table for docs/conformal.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from app.config import get_settings
from app.services import build_embedder, build_store
from retrieval.drift import DriftWatch
from retrieval.jsonl import read_jsonl
from retrieval.kinds import KindClassifier

QA = Path(__file__).resolve().parents[1] / "data" / "qa"
OUT = Path(__file__).resolve().parent / "results" / "drift.json"

Point = tuple[float, float]  # (top-1 similarity, multi-hop score)


def _points(collection: str) -> dict[str, list[Point]]:
    """Every question's point, per pool."""
    settings = get_settings()
    store, embedder = build_store(settings.store), build_embedder(settings.embedder)
    kinds = KindClassifier.load()
    files = {
        "calibration": ["calib.jsonl"],
        "exchangeable": ["test.jsonl"],
        "bridge only": ["test.jsonl"],
        "unanswerable only": ["unanswerable_test.jsonl", "unanswerable_dev.jsonl"],
    }
    pools: dict[str, list[Point]] = {}
    try:
        for pool, names in files.items():
            rows = [r for n in names for r in read_jsonl(QA / n, lambda row, _n: row)[0]]
            if pool == "bridge only":
                rows = [r for r in rows if r.get("type") == "bridge"]
            vectors = embedder.embed([str(r["question"]) for r in rows])
            pools[pool] = [
                (
                    store.search(collection, v.tolist(), limit=1)[0].score,
                    kinds.multi_hop(str(r["question"])),
                )
                for r, v in zip(rows, vectors, strict=True)
            ]
    finally:
        embedder.close()
        store.close()
    return pools


def _alarm_at(
    reference: list[Point], pool: list[Point], n: int, window: int, rng: np.random.Generator
) -> int | None:
    watch = DriftWatch(
        [p[0] for p in reference], [p[1] for p in reference], window=window, false_alarm=0.01
    )
    for i in rng.integers(0, len(pool), n):
        watch.observe(pool[i][0], pool[i][1], threshold=None, none_cleared=False)
        if watch.drifted:
            return watch.status().drifted_at
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--collection", default="wiki")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pools = _points(args.collection)
    reference = pools.pop("calibration")
    rng = np.random.default_rng(args.seed)
    rows = []
    for pool, points in pools.items():
        n = 2000 if pool == "exchangeable" else 200
        alarms = [_alarm_at(reference, points, n, args.window, rng) for _ in range(args.runs)]
        hit = [a for a in alarms if a is not None]
        rows.append(
            {
                "stream": pool,
                "questions in pool": len(points),
                "requests": n,
                "runs": args.runs,
                "alarm share": round(len(hit) / args.runs, 3),
                "median alarm at": statistics.median(hit) if hit else None,
            }
        )
    OUT.write_text(json.dumps({"window": args.window, "rows": rows}, indent=1) + "\n")
    print("| stream | pool | requests | runs with an alarm | median alarm at |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['stream']} | {r['questions in pool']} | {r['requests']} | "
            f"{r['alarm share']:.1%} | {r['median alarm at'] or '—'} |"
        )


if __name__ == "__main__":
    main()
