"""Where a bridge question's last hop is after each round of the loop's linked search.

    COVRAG_DATA_DIR=… python -m bench.bridge_hops [--qa data/qa/dev.jsonl] [--collection wiki]

For each bridge question (its last gold document holds the answer): is that document in the
first round's conformal context, and otherwise, at which rank among the documents that
context names (``Retriever.linked``: what the loop searches next, no LLM involved)? Prints,
per α, the share of questions whose last hop is in the first context, in it or the first
1 or 3 linked documents, or named at all, and the share the response flags guaranteed.
The calibration of the collection must be current (``covrag calibrate``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.config import get_settings
from app.services import build_embedder, build_store
from retrieval.jsonl import read_jsonl
from retrieval.retriever import Retriever
from retrieval.types import Budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qa", type=Path, default=Path("data/qa/dev.jsonl"))
    parser.add_argument("--collection", default="wiki")
    args = parser.parse_args()
    settings = get_settings()
    rows = [r for r in read_jsonl(args.qa, lambda row, _n: row)[0] if r.get("type") == "bridge"]
    store, embedder = build_store(settings.store), build_embedder(settings.embedder)
    retriever = Retriever(
        store,
        embedder,
        stale_fraction=settings.calibration.stale_fraction,
        multi_hop_links=settings.calibration.multi_hop_links,
    )
    budget = Budget(chunks=settings.limits.max_chunks, chars=settings.limits.max_context_chars)
    links = "on" if settings.calibration.multi_hop_links else "off"
    print(f"{len(rows)} bridge questions of {args.qa} over {args.collection!r}, links {links}\n")
    print("| α | in round 0 | + 1 linked | + 3 linked | named at all | flagged guaranteed |")
    print("|---:|---:|---:|---:|---:|---:|")
    try:
        for alpha in (0.05, 0.1, 0.2):
            ranks: list[int | None] = []  # 0: in the first context; None: never named
            flagged = 0
            for row in rows:
                last = str(row["gold_titles"][-1])
                first = retriever.retrieve(
                    args.collection, row["question"], alpha=alpha, budget=budget
                )
                flagged += first.coverage_guaranteed
                if last in {h.doc_id for h in first.hits}:
                    ranks.append(0)
                    continue
                linked = [
                    h.title for h in retriever.linked(args.collection, first.vector, first.hits)
                ]
                ranks.append(linked.index(last) + 1 if last in linked else None)
            n = len(rows)

            def share(k: int, found: list[int | None] = ranks, n: int = n) -> str:
                return f"{sum(r is not None and r <= k for r in found) / n:.3f}"

            print(
                f"| {alpha:g} | {share(0)} | {share(1)} | {share(3)} | {share(10**6)} | "
                f"{flagged / n:.2f} |"
            )
    finally:
        embedder.close()
        store.close()


if __name__ == "__main__":
    main()
