"""Foundation benchmark: embedder choice, demo-corpus ingest, /v1/query overhead outside the LLM.

    .venv/bin/python -m bench.run_foundation [--generator-url URL] [--retrieves 300] [--queries 50]

Writes ``bench/results/foundation.json`` and prints a markdown table for docs/performance.md. The
overhead of a query is the client-measured latency minus the server's own ``generate``
timing: embed + search + HTTP + (de)serialisation, everything but the LLM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from retrieval.calibration import calibrate
from retrieval.calibration_set import load_qa
from retrieval.corpus import fetch_wiki, load_wiki
from retrieval.embed import make_embedder
from retrieval.ingest import Ingestor
from retrieval.retriever import Retriever
from retrieval.store import EdgeStore
from retrieval.types import Budget
from tests.conftest import free_port
from workers.models import prepare_generator_model
from workers.process import stop_worker
from workers.vllm import launch_worker

REPO = Path(__file__).resolve().parents[1]

CACHE = REPO / ".covrag"
DEV_QA = REPO / "data" / "qa" / "dev.jsonl"


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def bench_embedders(texts: list[str]) -> dict[str, object]:
    """Side by side in one run: bulk throughput, one-query latency, fidelity to fp32."""
    onnx, torch = make_embedder("onnx"), make_embedder("torch")
    out: dict[str, object] = {}
    rows = {}
    for name, emb in (("onnx", onnx), ("torch", torch)):
        emb.embed(texts[:16])
        start = time.perf_counter()
        rows[name] = emb.embed(texts)
        bulk = len(texts) / (time.perf_counter() - start)
        lat = []
        for q in texts[:100]:
            s = time.perf_counter()
            emb.embed([q.split(".")[0] + "?"])
            lat.append((time.perf_counter() - s) * 1000)
        out[name] = {"texts_per_s": round(bulk, 1), "query_ms_p50": pct(lat, 50)}
    cos = (rows["onnx"] * rows["torch"]).sum(axis=1)
    out["onnx_vs_torch_cosine"] = {
        "min": round(float(cos.min()), 5),
        "mean": round(float(cos.mean()), 5),
    }
    return out


def bench_ingest(data_dir: Path) -> dict[str, object]:
    docs = load_wiki(fetch_wiki(CACHE / "corpus"))
    store = EdgeStore(data_dir / "edge")
    ingestor = Ingestor(
        store, make_embedder("onnx", batch_size=8), chunk_words=160, chunk_overlap=32
    )
    start = time.perf_counter()
    report = ingestor.ingest("wiki", docs)
    wall = time.perf_counter() - start
    store.close()
    return {
        "documents": report.documents,
        "chunks": report.chunks_written,
        "wall_s": round(wall, 1),
        "docs_per_s": round(report.documents / wall, 1),
        "chunks_per_s": round(report.chunks_written / wall, 1),
    }


def bench_filter(data_dir: Path, n: int = 300) -> dict[str, object]:
    """The conformal filter's cost beyond the search: threshold search vs plain top-k search.

    Calibrates the collection on the calibration part of the dev set, then runs the same
    questions both ways, interleaved, through ``Retriever`` (embedding excluded from the figure).
    """
    store = EdgeStore(data_dir / "edge")
    embedder = make_embedder("onnx")
    qa = load_qa(DEV_QA)
    calibrate(store, embedder, "wiki", qa.items[::4], source="bench", default_alpha=0.1)
    retriever = Retriever(store, embedder)
    budget = Budget(chunks=10, chars=6000)
    plain, filtered = [], []
    for i in range(n):
        question = qa.items[i % len(qa.items)].question
        for conformal, sink in ((False, plain), (True, filtered)):
            r = retriever.retrieve("wiki", question, alpha=None, budget=budget, conformal=conformal)
            sink.append(r.timings_ms["filter"] + r.timings_ms["search"])
    store.update_metadata("wiki", {"calibration": None})  # the query bench runs uncalibrated
    store.close()
    return {
        "n": n,
        "plain_search_ms_p50": pct(plain, 50),
        "filter_plus_threshold_search_ms_p50": pct(filtered, 50),
        "added_ms_p50": round(pct(filtered, 50) - pct(plain, 50), 3),
    }


def bench_queries(
    data_dir: Path, generator_url: str, n_retrieve: int, n_query: int
) -> dict[str, object]:
    """Overhead outside the LLM, two ways, against one real server process.

    ``/v1/retrieve``: the whole client round trip (embed + search + HTTP), no LLM at all.
    ``/v1/query``: the client round trip minus the server's own ``generate`` timing.
    """
    questions = [json.loads(line)["question"] for line in DEV_QA.read_text().splitlines()]
    port = free_port()
    env = {
        **os.environ,
        "COVRAG_DATA_DIR": str(data_dir),
        "COVRAG_GENERATOR_URLS": generator_url,
        "COVRAG_PORT": str(port),
        "COVRAG_MAX_TOKENS": "16",
        "COVRAG_GENERATOR_TIMEOUT_S": "300",
    }
    server = subprocess.Popen(
        [str(REPO / ".venv/bin/covrag"), "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            _wait_ready(client)
            retrieve = [
                _timed(client, "/v1/retrieve", questions[i % len(questions)])[0]
                for i in range(n_retrieve)
            ]
            overhead, embed, search = [], [], []
            failed = 0
            for i in range(n_query):
                wall, body = _timed(client, "/v1/query", questions[i % len(questions)])
                if "timings_ms" not in body:  # a 503/504 from an overloaded generator
                    failed += 1
                    continue
                t = body["timings_ms"]
                overhead.append(wall - t["generate"])
                embed.append(t["embed"])
                search.append(t["search"])
    finally:
        server.terminate()
        server.wait(30)
    return {
        "retrieve_round_trip_ms": {
            "n": n_retrieve,
            "p50": pct(retrieve, 50),
            "p99": pct(retrieve, 99),
        },
        "query_overhead_ms": {
            "n": len(overhead),
            "generator_errors": failed,
            "p50": pct(overhead, 50),
            "p99": pct(overhead, 99),
        },
        "embed_ms": {"p50": pct(embed, 50), "p99": pct(embed, 99)},
        "search_ms": {"p50": pct(search, 50), "p99": pct(search, 99)},
    }


def _wait_ready(client: httpx.Client) -> None:
    for _ in range(600):
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server never became ready")


def _timed(client: httpx.Client, path: str, question: str) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    response = client.post(path, json={"question": question, "top_k": 5})
    wall = (time.perf_counter() - start) * 1000
    if response.status_code < 500:
        response.raise_for_status()
    return wall, response.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--generator-url", help="a running vLLM server (else one is started)")
    parser.add_argument("--retrieves", type=int, default=300, help="/v1/retrieve calls")
    parser.add_argument("--queries", type=int, default=50, help="/v1/query calls")
    parser.add_argument(
        "--data-dir", type=Path, help="an existing data dir with `wiki`: only the query stage runs"
    )
    args = parser.parse_args()

    out = REPO / "bench" / "results" / "foundation.json"
    result: dict[str, object] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "command": "python -m bench.run_foundation " + " ".join(sys.argv[1:]),
    }

    def record(key: str, value: object) -> None:
        """Keep every finished stage on disk: a later stage failing loses nothing."""
        result[key] = value
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({key: value}), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        if args.data_dir is None:  # a fresh collection: measure the ingest and the filter
            docs = load_wiki(fetch_wiki(CACHE / "corpus"))
            record("embedders", bench_embedders([f"{d.title}. {d.text}" for d in docs[::20][:512]]))
            record("ingest", bench_ingest(data_dir))
            record("filter", bench_filter(data_dir))
        handle = None
        url = args.generator_url
        if url is None:
            model = prepare_generator_model(CACHE / "models", REPO / ".venv-vllm/bin/python")
            handle = launch_worker(
                "generate",
                model_dir=model,
                port=free_port(),
                vllm_python=REPO / ".venv-vllm/bin/python",
                logs_dir=Path(tmp),
            )
            url = handle.url
        try:
            record("query", bench_queries(data_dir, url, args.retrieves, args.queries))
        finally:
            if handle is not None:
                stop_worker(handle)


if __name__ == "__main__":
    main()
