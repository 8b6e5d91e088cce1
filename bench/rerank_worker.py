"""The reranker in the API's process against the reranker on the critic worker, one run.

    python -m bench.rerank_worker --reranker DIR [--qa data/qa/dev.jsonl] [--rounds 100]

Each round reranks one dev question with ``--candidates`` real `wiki` summaries (its gold
article and others drawn at random, seeded): what a reranked request scores. Three arms on
the same rounds, one after another on this machine: ``OnnxReranker`` in process (the API's
default), ``TorchReranker`` in process (the worker's arithmetic, without the HTTP), and
``RemoteReranker`` to a real critic worker process serving the reranker alone (torch on CPU
here: no GPU). Reported: p50/p95/p99 ms a round per arm and the ratios to in process, the
worker's own scoring time (``compute_ms`` of the same requests, sent again), and its overhead
a round (remote p50 − that p50: HTTP, JSON and the server), which is what a GPU worker would
add to its own compute.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.stats import percentiles
from retrieval.corpus import fetch_wiki, load_wiki
from retrieval.jsonl import read_jsonl
from retrieval.rerank import OnnxReranker, RemoteReranker, Reranker, TorchReranker, passage_text
from tests.conftest import CACHE_DIR, free_port
from workers.critic_server import launch_critic_worker
from workers.process import stop_worker

Round = tuple[str, list[str], list[float]]


def rounds(qa: Path, n: int, candidates: int, seed: int) -> list[Round]:
    """``n`` questions, each with its gold summary and ``candidates`` − 1 others."""
    docs = load_wiki(fetch_wiki(CACHE_DIR / "corpus"))
    by_id = {d.id: d for d in docs}
    rng = random.Random(seed)
    out: list[Round] = []
    for row in read_jsonl(qa, lambda row, _n: row)[0][:n]:
        gold = [by_id[g] for g in row["gold_titles"] if g in by_id][:1]
        picked = gold + rng.sample(docs, candidates - len(gold))
        cosines = [round(rng.uniform(0.3, 0.8), 3) for _ in picked]
        out.append((str(row["question"]), [passage_text(d.title, d.text) for d in picked], cosines))
    return out


def timed(reranker: Reranker, work: list[Round]) -> list[float]:
    reranker.score(*work[0])  # warm: the first call loads kernels and opens the connection
    times: list[float] = []
    for question, passages, cosines in work:
        start = time.perf_counter()
        reranker.score(question, passages, cosines)
        times.append((time.perf_counter() - start) * 1000)
    return times


def worker_compute(url: str, work: list[Round]) -> list[float]:
    """The worker's own scoring time a round (``compute_ms``), for the same requests."""
    with httpx.Client(base_url=url, timeout=60) as client:
        return [
            float(
                client.post("/rerank", json={"question": q, "passages": p, "cosines": c}).json()[
                    "compute_ms"
                ]
            )
            for q, p, c in work
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reranker", type=Path, required=True)
    parser.add_argument("--qa", type=Path, default=Path("data/qa/dev.jsonl"))
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/rerank-worker.json"))
    args = parser.parse_args()
    work = rounds(args.qa, args.rounds, args.candidates, args.seed)
    arms: dict[str, list[float]] = {}
    onnx = OnnxReranker(args.reranker)
    arms["onnx_in_process"] = timed(onnx, work)
    arms["torch_in_process"] = timed(TorchReranker(args.reranker, device="cpu"), work)
    with tempfile.TemporaryDirectory() as logs:
        handle = launch_critic_worker(
            None, free_port(), Path(logs), timeout_s=180, reranker_dir=args.reranker
        )
        remote = RemoteReranker(handle.url, timeout_s=60)
        try:
            assert remote.version == onnx.version
            arms["worker_http"] = timed(remote, work)
            arms["worker_compute"] = worker_compute(handle.url, work)
        finally:
            remote.close()
            stop_worker(handle)
    p50 = {arm: statistics.median(times) for arm, times in arms.items()}
    report: dict[str, Any] = {
        "command": "python -m bench.rerank_worker "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "rounds": len(work),
        "candidates": args.candidates,
        "layers": onnx.info.layers,
        "max_tokens": onnx.info.max_tokens,
        "ms": {arm: percentiles(times) for arm, times in arms.items()},
        "p50_over_onnx": {arm: round(v / p50["onnx_in_process"], 2) for arm, v in p50.items()},
        "worker_overhead_ms_p50": round(p50["worker_http"] - p50["worker_compute"], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
