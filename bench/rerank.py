"""The reranker against dense search as the conformal filter's score, per question kind.

    COVRAG_DATA_DIR=… python -m bench.rerank --reranker DIR [--qa data/qa/dev.jsonl]

Every dev question's dense top ``--candidates`` hits are reranked once; then, over random
calibration/test splits of the questions, each score calibrates its own threshold at each α
(split conformal, the product's rule) and the test half is filtered with it, budget 10:
dense keeps hits with cosine ≥ 1 − q̂ (scores over the whole collection, as the product
does), rerank keeps candidates with relevance ≥ 1 − q̂. Reported per kind: mean held-out
coverage (single: a gold article; bridge: the last hop; comparison: both articles), mean
passages kept, the oracle fixed top-k at the same coverage for both rankings, and a paired
sign test over questions (rerank's own threshold against dense's, at the median split).
Also the reranker's p50 time a question over the candidates (in process, onnxruntime).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.config import get_settings
from app.services import build_embedder, build_store
from bench.hybrid import sign_test
from retrieval.calibration_set import load_qa, score_items, worst_part
from retrieval.conformal import conformal_quantile
from retrieval.rerank import OnnxReranker, reranked

ALPHAS = (0.05, 0.1, 0.2)
BUDGET = 10


def coverage_at(keep: Sequence[Sequence[int | None]], k: float) -> list[bool]:
    return [all(r is not None and r <= k for r in ranks) for ranks in keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qa", type=Path, default=Path("data/qa/dev.jsonl"))
    parser.add_argument("--collection", default="wiki")
    parser.add_argument("--reranker", type=Path, required=True)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("bench/results/rerank.json"))
    args = parser.parse_args()
    settings = get_settings()
    store, embedder = build_store(settings.store), build_embedder(settings.embedder)
    reranker = OnnxReranker(args.reranker)
    items = load_qa(args.qa).items
    dense = score_items(store, embedder, args.collection, items)
    vectors = embedder.embed([it.question for it in items]).tolist()
    rows: list[dict[str, Any]] = []
    times: list[float] = []
    for item, vector, scored in zip(items, vectors, dense, strict=True):
        hits = store.search(args.collection, vector, limit=args.candidates)
        start = time.perf_counter()
        ranked = reranked(reranker, item.question, hits)
        times.append((time.perf_counter() - start) * 1000)
        worst = worst_part(item, ranked)
        score = math.inf if worst is None else 1.0 - (ranked[worst].relevance or 0.0)
        rows.append(
            {
                "kind": item.kind or "single",
                "dense": scored.score,
                "dense_sims": scored.similarities[:BUDGET],
                "dense_ranks": [scored.rank],
                "rerank": score,
                "rerank_rels": [h.relevance for h in ranked[:BUDGET]],
                "rerank_ranks": [None if worst is None else worst + 1],
            }
        )
    report: dict[str, Any] = {
        "command": "python -m bench.rerank "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "candidates": args.candidates,
        "reranker_ms_p50": round(statistics.median(times), 1),
        "reranker_ms_p95": round(float(np.percentile(times, 95)), 1),
        "trained_on": reranker.info.trained_on,
        "layers": reranker.info.layers,
        "results": [],
    }
    rng = random.Random(0)
    kinds = sorted({r["kind"] for r in rows})
    for alpha in ALPHAS:
        cells: dict[tuple[str, str], dict[str, list[float]]] = {}
        wins: dict[int, list[float]] = {i: [0.0, 0.0, 0.0] for i in range(len(rows))}
        for _ in range(args.splits):
            idx = list(range(len(rows)))
            rng.shuffle(idx)
            cal, test = idx[: len(idx) // 2], idx[len(idx) // 2 :]
            for m, method in enumerate(("dense", "rerank")):
                qhat = conformal_quantile(sorted(rows[i][method] for i in cal), alpha)
                values_key, ranks_key = (
                    ("dense_sims", "dense_ranks")
                    if method == "dense"
                    else ("rerank_rels", "rerank_ranks")
                )
                for i in test:
                    row = rows[i]
                    kept = min(BUDGET, sum(v >= 1 - qhat for v in row[values_key]))
                    covered = coverage_at([row[ranks_key]], kept)[0]
                    cell = cells.setdefault((row["kind"], method), {"cov": [], "kept": []})
                    cell["cov"].append(covered)
                    cell["kept"].append(kept)
                    wins[i][m] += covered
                    wins[i][2] += m == 0
        for kind in kinds:
            members = [i for i, r in enumerate(rows) if r["kind"] == kind]
            rate = {
                i: (wins[i][0] / wins[i][2], wins[i][1] / wins[i][2]) for i in members if wins[i][2]
            }
            result: dict[str, Any] = {"alpha": alpha, "kind": kind, "n": len(members)}
            for method, ranks_key in (("dense", "dense_ranks"), ("rerank", "rerank_ranks")):
                cov = statistics.mean(cells[(kind, method)]["cov"])
                result[f"{method}_coverage"] = round(cov, 3)
                result[f"{method}_chunks"] = round(
                    statistics.mean(cells[(kind, method)]["kept"]), 2
                )
                ranks = [rows[i][ranks_key] for i in members]
                result[f"{method}_oracle_k"] = next(
                    (
                        k
                        for k in range(1, args.candidates + 1)
                        if statistics.mean(coverage_at(ranks, k)) >= cov
                    ),
                    None,
                )
            only_rerank = sum(r > d for d, r in rate.values())
            only_dense = sum(d > r for d, r in rate.values())
            result["questions_rerank_better"] = only_rerank
            result["questions_dense_better"] = only_dense
            result["sign_test_p"] = round(sign_test(only_rerank, only_dense), 4)
            report["results"].append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
