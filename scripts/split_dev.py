"""Split the shared dev QA sets into disjoint calibration / critic-training / test parts.

    .venv/bin/python scripts/split_dev.py [--shared ../shared] [--out .covrag/qa]

Seeded and stratified by question type, so every run writes the same parts; the id lists are
also committed as ``bench/splits/dev_split.json``. Calibration (CONFLARE), self-practice and
critic training (SIM-RAG) and every published evaluation use their own part.
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
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--out", type=Path, default=REPO / ".covrag" / "qa")
    args = parser.parse_args()
    qa_dir = args.shared / "data" / "qa"
    dev = [json.loads(x) for x in (qa_dir / "dev.jsonl").read_text().splitlines() if x.strip()]
    lines = (qa_dir / "unanswerable_dev.jsonl").read_text().splitlines()
    unans = [json.loads(x) for x in lines if x.strip()]
    parts = split(dev, SHARES)
    parts |= {f"unanswerable_{k}": v for k, v in split(unans, {"train": 0.5, "test": 0.5}).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in parts.items():
        (args.out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ids = {name: sorted(r["id"] for r in rows) for name, rows in parts.items()}
    (REPO / "bench" / "splits" / "dev_split.json").write_text(json.dumps(ids, indent=1) + "\n")
    for name, rows in parts.items():
        kinds: dict[str, int] = defaultdict(int)
        for r in rows:
            kinds[r.get("type", "")] += 1
        print(f"{name:20s} {len(rows):4d}  {dict(kinds)}")


if __name__ == "__main__":
    main()
