"""Scale benchmark: covrag's vector stores on synthetic corpora of 10k-1M 384-d chunks.

    nice -n 19 .venv/bin/python -m bench.scale --sizes 10000 100000 1000000 \\
        --out bench/results/scale

Writes ``scale.json``, ``scale.md`` (the table for ``docs/performance.md``) and
``latency_vs_size.png`` under ``--out``. Every (backend, size) cell runs in its own child
process, one at a time, so its RSS is the store's alone and not what an earlier cell left
in the allocator. Cells land in ``--out/cells/`` as they are measured: ``--resume`` reuses the
complete ones (so 1M can run after the small sizes), and a cell past ``--cell-timeout``
(Edge's HNSW build at 1M on a small machine) is reported with what it measured before.

What is measured is covrag's own ``VectorStore`` code (``EdgeStore``, ``QdrantStore``), called
as the server calls it: ``upsert`` in batches of ``Point`` lists, ``search`` with a list of
floats. Edge is measured twice: as ingested (one plain segment, brute force), then after
``EdgeStore.build_index`` (the HNSW build the server runs as a job: copy, child process, swap),
with ``--hnsw-m``, ``--hnsw-ef-construct`` and ``--hnsw-ef`` passed to ``EdgeStore`` and
recorded in each Edge row. Segment counts come from below the API (the shard's info).

The corpus: Gaussian clusters around ``--centres`` random unit centres, noise with a power-law
spectrum (variance ∝ 1/i, an effective dimension of ~26, about that of sentence embeddings)
scaled to a within-cluster cosine of ~0.6, then normalised. Isotropic noise would make all
neighbours equidistant in 384-d and recall meaningless; plain uniform vectors have no
neighbours at all. Queries are fresh draws from the same mixture, not corpus points.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.stats import percentiles
from retrieval.chunking import chunk_id
from retrieval.store import EdgeStore, HnswParams, QdrantStore, VectorStore
from retrieval.types import Chunk, EmbedderSpec, Point

REPO = Path(__file__).resolve().parents[1]

DIM = 384
K = 10
CHUNKS_PER_DOC = 8
COLLECTION = "scale"
SPEC = EmbedderSpec("synthetic-384", DIM)
#: Norm of the noise: within-cluster cosine ≈ 1 / (1 + NOISE²) ≈ 0.6.
NOISE = 0.8
WORDS = [f"w{i:04d}" for i in range(2000)]


# -- data ---------------------------------------------------------------------------------
def mixture(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    """``n`` unit vectors from the clustered mixture (see the module docstring)."""
    spectrum = 1.0 / np.arange(1, DIM + 1)
    scale = NOISE * np.sqrt(spectrum / spectrum.sum())
    out = np.empty((n, DIM), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        block = centres[rng.integers(len(centres), size=m)]
        block += rng.standard_normal((m, DIM)).astype(np.float32) * scale.astype(np.float32)
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def dataset(size: int, queries: int, centres: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The corpus and the queries; the same for every backend at one size and seed."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, DIM)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return mixture(rng, c, size), mixture(rng, c, queries)


def payload(row: int, rng: np.random.Generator) -> dict[str, Any]:
    """A chunk payload of the shape ingestion writes, with ~100 characters of text."""
    doc, index = divmod(row, CHUNKS_PER_DOC)
    text = " ".join(WORDS[w] for w in rng.integers(len(WORDS), size=20))
    chunk = Chunk(
        id=chunk_id(f"doc{doc}", index),
        doc_id=f"doc{doc}",
        chunk_index=index,
        text=text,
        title=f"Document {doc}",
        source="synthetic",
        char_start=index * 100,
        char_end=index * 100 + len(text),
        doc_hash=f"{doc:016x}",
    )
    return chunk.payload()


def batches(corpus: np.ndarray, size: int, seed: int) -> Iterator[list[Point]]:
    """The corpus as the ``Point`` batches ingestion would upsert."""
    rng = np.random.default_rng(seed + 1)
    for start in range(0, len(corpus), size):
        rows = range(start, min(start + size, len(corpus)))
        yield [
            Point(
                id=chunk_id(f"doc{r // CHUNKS_PER_DOC}", r % CHUNKS_PER_DOC),
                vector=corpus[r].tolist(),
                payload=payload(r, rng),
            )
            for r in rows
        ]


def exact_top(corpus: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` rows and scores by brute force, in corpus blocks to bound memory."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(corpus), 100_000):
        scores = queries @ corpus[start : start + 100_000].T
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(scores, top, axis=1)], axis=1)
        best_i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s = np.take_along_axis(best_s, keep, axis=1)
        best_i = np.take_along_axis(best_i, keep, axis=1)
    return best_i, best_s


def row_of(hit_payload: dict[str, Any]) -> int:
    return int(str(hit_payload["doc_id"])[3:]) * CHUNKS_PER_DOC + int(hit_payload["chunk_index"])


# -- measurement ----------------------------------------------------------------------------
def proc_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (VmRSS now, VmHWM peak) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise KeyError(field)


def disk_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def latencies(fn: Callable[[list[float]], list[Any]], qs: list[list[float]]) -> dict[str, Any]:
    """Sequential calls, one thread; a short untimed warm-up first."""
    for q in qs[:20]:
        fn(q)
    ms, hits = [], []
    for q in qs:
        start = time.perf_counter()
        hits.append(fn(q))
        ms.append((time.perf_counter() - start) * 1000)
    return {**percentiles(ms), "mean": round(float(np.mean(ms)), 2), "hits": hits}


def measure(
    store: VectorStore, qs: list[list[float]], truth: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Top-10 recall and latency, then the conformal path's thresholded search."""
    top = latencies(lambda q: store.search(COLLECTION, q, limit=K), qs)
    found = [{row_of(h.payload) for h in hits} for hits in top.pop("hits")]
    recall = np.mean([len(f & set(t)) / K for f, t in zip(found, truth[:, :K], strict=True)])
    # The retriever asks for budget + 1 above the threshold (seeing it tells a budget cut).
    thr = latencies(
        lambda q: store.search(COLLECTION, q, limit=K + 1, score_threshold=threshold), qs
    )
    kept = thr.pop("hits")
    return {
        "recall_at_10": round(float(recall), 4),
        "top10_ms": top,
        "threshold_ms": thr,
        "threshold_mean_hits": round(float(np.mean([len(h) for h in kept])), 2),
    }


def ingest(store: VectorStore, corpus: np.ndarray, batch: int, seed: int) -> float:
    store.create_collection(COLLECTION, SPEC)
    start = time.perf_counter()
    for points in batches(corpus, batch, seed):
        store.upsert(COLLECTION, points)
    return round(time.perf_counter() - start, 1)


def save(path: Path, rows: list[dict[str, Any]], complete: bool) -> None:
    """Write a cell's rows as they come: a cell stopped by the timeout keeps what it had."""
    for row in rows:
        row |= {"peak_rss_mb": row.get("peak_rss_mb") or proc_mb("VmHWM")}
        row |= {"load_avg": row.get("load_avg") or [round(x, 2) for x in os.getloadavg()]}
    path.write_text(json.dumps({"rows": rows, "complete": complete}, indent=1) + "\n")


def shard_root(args: argparse.Namespace, size: int) -> Path:
    """Where the Edge cell builds: known to the parent, which cleans up a timed-out child."""
    return Path(args.tmp or tempfile.gettempdir()) / f"covrag-scale-edge-{size}"


def run_cell(backend: str, size: int, args: argparse.Namespace, path: Path) -> None:
    """One backend at one size: build, measure, and (Edge) optimise and measure again."""
    corpus, queries = dataset(size, args.queries, args.centres, args.seed)
    truth, scores = exact_top(corpus, queries, K + 1)
    # A conformal-like threshold: about half the queries clear the budget of 10.
    threshold = float(np.median(scores[:, K - 1]))
    qs = [q.tolist() for q in queries]
    base = {"backend": backend, "size": size, "threshold": round(threshold, 4)}
    rss0 = proc_mb("VmRSS")
    if backend == "qdrant":
        store: VectorStore = QdrantStore(location=":memory:")
        upsert_s = ingest(store, corpus, args.batch, args.seed)
        row = {
            **base,
            "state": "local mode (numpy brute force)",
            "upsert_s": upsert_s,
            "build_s": upsert_s,
            "rss_mb": proc_mb("VmRSS"),
            "store_rss_mb": round(proc_mb("VmRSS") - rss0, 1),
            "disk_mb": None,
            **measure(store, qs, truth, threshold),
        }
        store.close()
        save(path, [row], complete=True)
        return
    root = shard_root(args, size)
    shutil.rmtree(root, ignore_errors=True)
    params = HnswParams(m=args.hnsw_m, ef_construct=args.hnsw_ef_construct)
    base |= {"hnsw": {"m": params.m, "ef_construct": params.ef_construct, "ef": args.hnsw_ef}}
    try:
        edge = EdgeStore(root, hnsw=params, hnsw_ef=args.hnsw_ef)
        upsert_s = ingest(edge, corpus, args.batch, args.seed)

        def state() -> dict[str, Any]:
            info = edge.shard_info(COLLECTION)  # below the API: segments are no API matter
            return {
                "segments": info.segments_count,
                "indexed_vectors": info.indexed_vectors_count,
                "rss_mb": proc_mb("VmRSS"),
                "store_rss_mb": round(proc_mb("VmRSS") - rss0, 1),
                "disk_mb": disk_mb(root),
            }

        plain = {**base, "state": "as ingested (brute force)", "upsert_s": upsert_s}
        plain |= {"build_s": upsert_s, **state(), **measure(edge, qs, truth, threshold)}
        save(path, [plain], complete=False)
        index_s = round(edge.build_index(COLLECTION).seconds, 1)
        hnsw = {**base, "state": "build_index() → HNSW", "upsert_s": upsert_s}
        hnsw |= {"index_s": index_s, "build_s": round(upsert_s + index_s, 1)}
        hnsw |= {**state(), **measure(edge, qs, truth, threshold)}
        edge.close()
        save(path, [plain, hnsw], complete=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure_cell(backend: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one cell in a child process under ``--cell-timeout``; reuse it with ``--resume``."""
    path = args.out / "cells" / f"{backend}-{size}.json"
    if args.resume and path.exists() and json.loads(path.read_text())["complete"]:
        return json.loads(path.read_text())
    path.unlink(missing_ok=True)
    print(f"{backend} {size:,} ...", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.scale", *sys.argv[1:], "--cell", backend, str(size)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=args.cell_timeout,
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(shard_root(args, size), ignore_errors=True)
        if not path.exists():
            sys.exit(f"{backend} {size}: nothing measured within {args.cell_timeout} s")
        cell = json.loads(path.read_text())
        cell["stopped"] = f"stopped after {args.cell_timeout:g} s, in build_index()"
        return cell
    if done.returncode:
        sys.exit(f"{backend} {size}: {done.stderr}")
    return json.loads(path.read_text())


# -- report -------------------------------------------------------------------------------
def label(row: dict[str, Any]) -> str:
    return f"{row['backend']}: {row['state']}"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| store | chunks | build s | segments / indexed | recall@10 | top-10 p50 / p95 / p99 ms "
        "| threshold p50 / p99 ms (hits) | RSS MB (store) | disk MB |\n"
        "|---|---:|---:|---|---:|---|---|---:|---:|\n"
    )
    lines = []
    for r in rows:
        t, h = r["top10_ms"], r["threshold_ms"]
        seg = f"{r['segments']} / {r['indexed_vectors']}" if "segments" in r else "—"
        build = f"{r['build_s']}" + (f" ({r['index_s']} index)" if "index_s" in r else "")
        disk = "—" if r["disk_mb"] is None else f"{r['disk_mb']:,.0f}"
        lines.append(
            f"| {label(r)} | {r['size']:,} | {build} | {seg} | {r['recall_at_10']:.3f} "
            f"| {t['p50']} / {t['p95']} / {t['p99']} "
            f"| {h['p50']} / {h['p99']} ({r['threshold_mean_hits']}) "
            f"| {r['rss_mb']:,.0f} ({r['store_rss_mb']:,.0f}) "
            f"| {disk} |"
        )
    return head + "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, target_ms: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, name in enumerate(dict.fromkeys(label(r) for r in rows)):
        mine = sorted((r for r in rows if label(r) == name), key=lambda r: r["size"])
        sizes = [r["size"] for r in mine]
        color = f"C{i}"
        ax.plot(sizes, [r["top10_ms"]["p50"] for r in mine], "o-", color=color, label=f"{name} p50")
        ax.plot(sizes, [r["top10_ms"]["p99"] for r in mine], "s--", color=color, label="p99")
    ax.axhline(target_ms, color="grey", lw=0.8, ls=":", label=f"{target_ms:g} ms target")
    ax.set(xscale="log", yscale="log", xlabel="chunks (384-d)", ylabel="top-10 search ms")
    ax.set_title("VectorStore.search latency vs corpus size (1 thread, sequential)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> dict[str, Any]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gb": round(mem, 1),
        "python": platform.python_version(),
        "load_avg_at_start": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale")
    ap.add_argument("--queries", type=int, default=500, help="timed and scored for recall")
    ap.add_argument("--centres", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=512, help="points per upsert")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--qdrant-max",
        type=int,
        default=100_000,
        help="largest size for qdrant-client local mode (brute force, linear in size)",
    )
    ap.add_argument("--target-ms", type=float, default=25.0)
    ap.add_argument("--tmp", type=Path, default=None, help="where Edge shards are built")
    ap.add_argument(
        "--cell-timeout",
        type=float,
        default=3600,
        help="seconds per (backend, size); an Edge cell stopped in build_index() keeps its "
        "as-ingested row",
    )
    ap.add_argument("--hnsw-m", type=int, default=HnswParams().m, help="EdgeStore's HNSW m")
    ap.add_argument("--hnsw-ef-construct", type=int, default=HnswParams().ef_construct)
    ap.add_argument("--hnsw-ef", type=int, default=None, help="search ef; none = ef_construct")
    ap.add_argument("--resume", action="store_true", help="reuse complete cells under --out")
    ap.add_argument("--cell", nargs=2, metavar=("BACKEND", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    (args.out / "cells").mkdir(parents=True, exist_ok=True)
    if args.cell:
        backend, size = args.cell[0], int(args.cell[1])
        run_cell(backend, size, args, args.out / "cells" / f"{backend}-{size}.json")
        return
    command = "nice -n 19 .venv/bin/python -m bench.scale " + " ".join(sys.argv[1:])
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    started = datetime.now(UTC).isoformat(timespec="seconds")
    for size in args.sizes:
        for backend in ("edge", "qdrant"):
            if backend == "qdrant" and size > args.qdrant_max:
                notes.append(f"qdrant-client local mode not run at {size:,} (> --qdrant-max)")
                continue
            cell = measure_cell(backend, size, args)
            rows += cell["rows"]
            if "stopped" in cell:
                notes.append(f"{backend} at {size:,}: {cell['stopped']}")
            print(table(cell["rows"]), file=sys.stderr, flush=True)
    report = {
        "date": started,
        "command": command,
        "machine": machine(),
        "params": {
            k: v for k, v in vars(args).items() if k not in ("out", "tmp", "cell", "resume")
        },
        "corpus": "clustered 384-d unit vectors (module docstring of bench/scale.py)",
        "notes": notes,
        "rows": rows,
    }
    (args.out / "scale.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "scale.md").write_text(
        f"# Scale — generated {started}: `{command}`\n\n{table(rows)}"
        + "".join(f"\n- {n}" for n in notes)
        + "\n"
    )
    plot(rows, args.out / "latency_vs_size.png", args.target_ms)
    print(table(rows))


if __name__ == "__main__":
    main()
