"""Why ingest stays far below 150 chunks/s here: the FLOPs MiniLM needs against this CPU's.

    .venv/bin/python -m bench.embed_bound [--data-dir .covrag]

Counts the tokens of every chunk of the demo corpus, cut and prefixed as ingestion does it
(``chunk_document``, ``embedding_text``), turns them into the FLOPs of all-MiniLM-L6-v2
(6 layers, hidden 384, FFN 1536: the dense layers per token plus attention per token pair),
and sets the rate 150 chunks/s would
need against two measured rates: numpy's fp32 matrix multiply on a BERT-FFN shape with all
cores (a practical ceiling) and the default ONNX embedder on 512 of the chunks. Writes
``bench/results/embed_bound.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from app.config import Settings
from retrieval.chunking import chunk_document, embedding_text
from retrieval.corpus import fetch_wiki, load_wiki
from retrieval.embed.onnx import OnnxEmbedder

REPO = Path(__file__).resolve().parents[1]

LAYERS, HIDDEN, FFN = 6, 384, 1536
DENSE_PER_TOKEN = 2 * LAYERS * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN)  # Q, K, V, out; FFN
ATTENTION_PER_PAIR = 2 * LAYERS * 2 * HIDDEN  # QKᵀ and the weighted sum of V
TARGET = 150  # chunks/s, issue #7


def chunk_texts(corpus_dir: Path) -> list[str]:
    """What ingestion embeds for the demo corpus, with the server's chunking settings."""
    settings = Settings()
    return [
        embedding_text(chunk)
        for doc in load_wiki(fetch_wiki(corpus_dir))
        for chunk in chunk_document(
            doc, words=settings.collections.chunk_words, overlap=settings.collections.chunk_overlap
        )
    ]


def gflop(tokens: np.ndarray) -> np.ndarray:
    return (tokens * DENSE_PER_TOKEN + tokens**2 * ATTENTION_PER_PAIR) / 1e9


def sgemm_gflops(repeats: int = 20) -> float:
    """Best of ``repeats`` fp32 multiplies shaped like a 2,048-token batch's FFN input."""
    a = np.random.default_rng(0).random((2048, HIDDEN), dtype=np.float32)
    b = np.random.default_rng(1).random((HIDDEN, FFN), dtype=np.float32)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * a.shape[0] * HIDDEN * FFN / (time.perf_counter() - start) / 1e9)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO / ".covrag")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/embed_bound.json")
    args = parser.parse_args()

    texts = chunk_texts(args.data_dir / "corpus")
    embedder = OnnxEmbedder()
    tokens = np.array(embedder.count_tokens(texts))
    per_chunk = float(gflop(tokens).mean())
    picked = np.random.default_rng(0).choice(len(texts), 512, replace=False)
    sample = [texts[i] for i in picked]
    embedder.embed(sample[:16])  # warm-up
    start = time.perf_counter()
    embedder.embed(sample)
    seconds = time.perf_counter() - start
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join(["python -m bench.embed_bound", *sys.argv[1:]]),
        "chunks": len(texts),
        "tokens_mean": round(float(tokens.mean()), 1),
        "tokens_max": int(tokens.max()),
        "gflop_per_chunk": round(per_chunk, 3),
        "needed_gflops_at_target": round(TARGET * per_chunk, 1),
        "sgemm_best_gflops": round(sgemm_gflops(), 1),
        "embedder_chunks_per_s": round(len(sample) / seconds, 1),
        "embedder_gflops": round(float(gflop(tokens[picked]).sum()) / seconds, 1),
    }
    result["target_vs_sgemm"] = round(
        result["needed_gflops_at_target"] / result["sgemm_best_gflops"], 2
    )
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
