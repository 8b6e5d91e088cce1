"""Hybrid against dense search on one calibrated collection, side by side per question kind.

    COVRAG_DATA_DIR=… python -m bench.hybrid [--qa data/qa/dev.jsonl] [--collection wiki]

For every question, with the same Retriever and the same question vector: dense and hybrid
search at each α (the conformal filter) and as plain top-5 (``conformal=False``). Per kind and
setting: whether the context holds what the answer needs (single: a gold article; bridge: the
last hop; comparison: both articles), the passages it holds, the questions only one of the two
covers with an exact two-sided sign test on them (the paired test), and the p50 of the search
time a round (dense search; hybrid adds the keyword search). The collection must have keyword
vectors (ingested since they exist) and a current calibration.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

from app.config import get_settings
from app.services import build_embedder, build_store
from retrieval.hybrid import SearchMode
from retrieval.jsonl import read_jsonl
from retrieval.retriever import Retriever
from retrieval.types import Budget, Retrieval

SEARCHES: tuple[SearchMode, ...] = ("dense", "hybrid")
#: The control arm: the dense conformal set and this many more dense hits (the most keyword
#: hits hybrid search may add, COVRAG_KEYWORD_HITS's default), within the budget.
EXTRA = 3


def needed(row: dict[str, Any]) -> set[str]:
    """The articles the answer needs in the context."""
    gold = [str(t) for t in row["gold_titles"]]
    kind = row.get("type", "single")
    return {gold[-1]} if kind == "bridge" else set(gold) if kind == "comparison" else {gold[0]}


def sign_test(only_a: int, only_b: int) -> float:
    """Exact two-sided p of the discordant pairs under "either is as likely to win"."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qa", type=Path, default=Path("data/qa/dev.jsonl"))
    parser.add_argument("--collection", default="wiki")
    parser.add_argument("--out", type=Path, default=Path("bench/results/hybrid.json"))
    args = parser.parse_args()
    settings = get_settings()
    rows = [r for r in read_jsonl(args.qa, lambda row, _n: row)[0] if r.get("gold_titles")]
    store, embedder = build_store(settings.store), build_embedder(settings.embedder)
    retriever = Retriever(store, embedder, keyword_hits=settings.limits.keyword_hits)
    budget = Budget(chunks=settings.limits.max_chunks, chars=settings.limits.max_context_chars)
    top5 = Budget(chunks=5, chars=settings.limits.max_context_chars)
    settings_list: list[tuple[str, float | None]] = [
        ("α 0.05", 0.05),
        ("α 0.1", 0.1),
        ("α 0.2", 0.2),
        ("top-5", None),
    ]
    results: dict[str, dict[str, dict[str, list[Any]]]] = {}
    try:
        for row in rows:
            kind = str(row.get("type", "single"))
            vector = embedder.embed([row["question"]])[0].tolist()
            for label, alpha in settings_list:
                cell = results.setdefault(label, {}).setdefault(kind, {})
                for search in SEARCHES:
                    got: Retrieval = retriever.retrieve(
                        args.collection,
                        row["question"],
                        alpha=alpha,
                        budget=budget if alpha is not None else top5,
                        conformal=alpha is not None,
                        vector=vector,
                        search=search,
                    )
                    covered = needed(row) <= {h.doc_id for h in got.hits}
                    cell.setdefault(f"{search}_covered", []).append(covered)
                    cell.setdefault(f"{search}_passed", []).append(len(got.hits))
                    cell.setdefault(f"{search}_ms", []).append(got.timings_ms["search"])
                    if search == "dense" and alpha is not None:
                        # the control: as many more passages as hybrid may add, from dense
                        more = store.search(args.collection, vector, limit=len(got.hits) + EXTRA)
                        docs = {h.doc_id for h in more[: budget.chunks]}
                        cell.setdefault("more_covered", []).append(needed(row) <= docs)
    finally:
        embedder.close()
        store.close()
    report = []
    print(f"{len(rows)} questions of {args.qa} over {args.collection!r}\n")
    print(
        "| setting | kind | n | dense coverage | hybrid coverage | only dense | only hybrid | "
        "sign-test p | dense passages | hybrid passages | search ms p50 dense / hybrid | "
        "dense + 3 coverage |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, kinds in results.items():
        for kind, cell in sorted(kinds.items()):
            dense, hybrid = cell["dense_covered"], cell["hybrid_covered"]
            only_d = sum(d and not h for d, h in zip(dense, hybrid, strict=True))
            only_h = sum(h and not d for d, h in zip(dense, hybrid, strict=True))
            line = {
                "setting": label,
                "kind": kind,
                "n": len(dense),
                "dense_coverage": sum(dense) / len(dense),
                "hybrid_coverage": sum(hybrid) / len(hybrid),
                "only_dense": only_d,
                "only_hybrid": only_h,
                "sign_test_p": sign_test(only_d, only_h),
                "dense_passages": statistics.mean(cell["dense_passed"]),
                "hybrid_passages": statistics.mean(cell["hybrid_passed"]),
                "dense_ms_p50": statistics.median(cell["dense_ms"]),
                "hybrid_ms_p50": statistics.median(cell["hybrid_ms"]),
                "dense_plus_3_coverage": (
                    sum(cell["more_covered"]) / len(cell["more_covered"])
                    if "more_covered" in cell
                    else None
                ),
            }
            report.append(line)
            print(
                f"| {label} | {kind} | {line['n']} | {line['dense_coverage']:.3f} | "
                f"{line['hybrid_coverage']:.3f} | {only_d} | {only_h} | "
                f"{line['sign_test_p']:.3g} | {line['dense_passages']:.2f} | "
                f"{line['hybrid_passages']:.2f} | {line['dense_ms_p50']:.1f} / "
                f"{line['hybrid_ms_p50']:.1f} | "
                + (
                    "—"
                    if line["dense_plus_3_coverage"] is None
                    else f"{line['dense_plus_3_coverage']:.3f}"
                )
                + " |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
