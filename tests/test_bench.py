"""The scale benchmark still runs on today's store: it reads segment counts below the
``VectorStore`` API, and once broke there with no test to notice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_scale_benchmark_measures_a_small_corpus_on_both_paths(tmp_path: Path) -> None:
    out = tmp_path / "out"
    small = ["--sizes", "2000", "--queries", "50", "--centres", "64"]
    run = subprocess.run(
        [sys.executable, "-m", "bench.scale", *small, "--out", str(out), "--tmp", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads((out / "scale.json").read_text())["rows"]
    states = {(r["backend"], r["state"]): r for r in rows}
    plain = states["edge", "as ingested (brute force)"]
    hnsw = states["edge", "build_index() → HNSW"]
    assert (plain["segments"], plain["indexed_vectors"]) == (1, 0)
    assert hnsw["indexed_vectors"] == 2000
    assert plain["recall_at_10"] == 1.0  # exact search against exact search
    assert hnsw["recall_at_10"] >= 0.9
    assert states["qdrant", "local mode (numpy brute force)"]["recall_at_10"] == 1.0
    assert (out / "latency_vs_size.png").stat().st_size > 0
