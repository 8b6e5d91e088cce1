"""Split the dev QA sets into disjoint calibration / critic-training / test parts.

    .venv/bin/python scripts/split_dev.py [--qa data/qa]

Seeded and stratified by question type, so every run writes the same parts, which are committed
beside the sets (``data/qa/calib.jsonl``, ``train.jsonl``, …). Calibration (CONFLARE),
self-practice and critic training (SIM-RAG) and every published evaluation use their own part.
Unanswerable questions (no gold) are split in two: critic training and test.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED = 20261126
SHARES = {"calib": 0.25, "train": 0.40, "test": 0.35}


def split(rows: list[dict], shares: dict[str, float]) -> dict[str, list[dict]]:
    by_type: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_type[row.get("type", "")].append(row)
    parts: dict[str, list[dict]] = {name: [] for name in shares}
    rng = random.Random(SEED)
    for kind in sorted(by_type):
        group = sorted(by_type[kind], key=lambda r: r["id"])
        rng.shuffle(group)
        start = 0
        for i, (name, share) in enumerate(shares.items()):
            end = len(group) if i == len(shares) - 1 else start + round(share * len(group))
            parts[name] += group[start:end]
            start = end
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--qa", type=Path, default=REPO / "data" / "qa")
    args = parser.parse_args()
    qa_dir = args.qa
    dev = [json.loads(x) for x in (qa_dir / "dev.jsonl").read_text().splitlines() if x.strip()]
    lines = (qa_dir / "unanswerable_dev.jsonl").read_text().splitlines()
    unans = [json.loads(x) for x in lines if x.strip()]
    parts = split(dev, SHARES)
    parts |= {f"unanswerable_{k}": v for k, v in split(unans, {"train": 0.5, "test": 0.5}).items()}
    for name, rows in parts.items():
        (qa_dir / f"{name}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    for name, rows in parts.items():
        kinds: dict[str, int] = defaultdict(int)
        for r in rows:
            kinds[r.get("type", "")] += 1
        print(f"{name:20s} {len(rows):4d}  {dict(kinds)}")


if __name__ == "__main__":
    main()
