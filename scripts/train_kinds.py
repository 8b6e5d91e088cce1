"""Train the question-kind classifier (``retrieval.kinds``) and report its test accuracy.

    python scripts/train_kinds.py --train data/qa/train.jsonl data/qa/calib.jsonl \
        --test data/qa/test.jsonl

Writes retrieval/weights/kinds.json (or ``--out``) and prints accuracy and the confusion
matrix on the test questions, which the classifier never saw.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from retrieval.jsonl import read_jsonl
from retrieval.kinds import KINDS, WEIGHTS, KindClassifier, train


def _labelled(paths: list[Path]) -> tuple[list[str], list[str]]:
    rows = [r for p in paths for r in read_jsonl(p, lambda row, _n: row)[0]]
    kept = [r for r in rows if r.get("type") in KINDS]
    return [str(r["question"]) for r in kept], [str(r["type"]) for r in kept]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, nargs="+", required=True)
    parser.add_argument("--test", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    questions, kinds = _labelled(args.train)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(train(questions, kinds, args.seed)) + "\n")
    model = KindClassifier.load(args.out)
    test_q, test_k = _labelled(args.test)
    start = time.perf_counter()
    predicted = [model.kind(q) for q in test_q]
    per_question_ms = (time.perf_counter() - start) * 1000 / max(len(test_q), 1)
    right = sum(p == k for p, k in zip(predicted, test_k, strict=True))
    print(f"trained on {len(questions)} questions → {args.out}")
    print(
        f"test accuracy {right}/{len(test_k)} = {right / len(test_k):.3f}, "
        f"{per_question_ms:.3f} ms a question"
    )
    print("true \\ predicted  " + "  ".join(f"{k:>10}" for k in KINDS))
    for true in KINDS:
        counts = [
            sum(1 for p, k in zip(predicted, test_k, strict=True) if k == true and p == c)
            for c in KINDS
        ]
        print(f"{true:>16}  " + "  ".join(f"{c:>10}" for c in counts))


if __name__ == "__main__":
    main()
