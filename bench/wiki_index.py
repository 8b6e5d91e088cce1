"""The demo ``wiki`` collection with and without its HNSW index: recall and search latency.

    .venv/bin/python -m bench.wiki_index [--data-dir .covrag]

Why: ``COVRAG_INDEX_THRESHOLD`` (10,000 chunks) puts the 10k ``wiki`` under HNSW, and the
synthetic corpora of ``scale.py`` say little about recall on real text. Copies the collection's
shard to a temporary directory (the original is not touched; no server may hold it), builds
the index there, then for every dev QA question: recall@10 of the indexed search against the
unindexed copy's exact search, and ``EdgeStore.search`` latency (budget-sized, with payloads) before
and after, the two measured alternately. Writes ``bench/results/scale/wiki_index.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.stats import percentiles
from retrieval.embed import make_embedder
from retrieval.store import EdgeStore

REPO = Path(__file__).resolve().parents[1]

DEV_QA = REPO / "data" / "qa" / "dev.jsonl"
LIMIT = 9  # the default chunk budget + 1, as a conformal search asks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=REPO / ".covrag")
    parser.add_argument("--collection", default="wiki")
    args = parser.parse_args()

    questions = [json.loads(line)["question"] for line in DEV_QA.read_text().splitlines()]
    vectors = [v.tolist() for v in make_embedder("onnx").embed(questions)]
    with tempfile.TemporaryDirectory() as tmp:
        for copy in ("plain", "indexed"):
            shutil.copytree(
                args.data_dir / "edge" / args.collection, Path(tmp, copy, args.collection)
            )
        plain, indexed = EdgeStore(Path(tmp, "plain")), EdgeStore(Path(tmp, "indexed"))
        report = indexed.build_index(args.collection)

        def top10(store: EdgeStore, vector: list[float]) -> set[str]:
            return {hit.id for hit in store.search(args.collection, vector, limit=10)}

        # the plain copy is one unindexed segment: its search is exact
        recall = sum(len(top10(indexed, v) & top10(plain, v)) / 10 for v in vectors) / len(vectors)
        latency: dict[str, list[float]] = {"brute force": [], "hnsw": []}
        for _ in range(2):
            for vector in vectors:
                for name, store in (("brute force", plain), ("hnsw", indexed)):
                    start = time.perf_counter()
                    store.search(args.collection, vector, limit=LIMIT)
                    latency[name].append((time.perf_counter() - start) * 1000)
        chunks = indexed.get_collection(args.collection).chunks
        plain.close()
        indexed.close()

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "command": "python -m bench.wiki_index " + " ".join(sys.argv[1:]),
        "collection": args.collection,
        "chunks": chunks,
        "questions": len(questions),
        "build_s": report.seconds,
        "recall_at_10": round(recall, 4),
        "search_ms": {name: percentiles(values) for name, values in latency.items()},
    }
    out = REPO / "bench" / "results" / "scale" / "wiki_index.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
