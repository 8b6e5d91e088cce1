"""Side by side: ``/v1/retrieve`` of the working tree against a git ref, servers alternating.

    .venv/bin/python -m bench.retrieve_ab --base REF [--rounds 10] [--data-dir .covrag]

Why: on this shared machine the query path without the LLM moves by a millisecond or more from
one run to the next, as much as a change to it saves, so one ``bench/serve.py`` run per version
cannot tell them apart. Each round here starts a fresh Redis and a ``covrag serve`` of each
version (which goes first alternates), warms it, then runs ``bench/serve.py``'s
``/v1/retrieve`` pass: every test-split question as a new one (a round-unique suffix: a cold
embedding), then again (a cached one); API keys, the Redis rate limiter and cache as in
``serve.py``. The verdict is the median of the per-round paired differences (base − working
tree) and of their ratios. Writes ``bench/results/serving/retrieve_ab.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.serve import KEY, retrieve_path, running_api

REPO = Path(__file__).resolve().parents[1]

WARMUP = 30  # first requests pay for onnxruntime's and the store's first runs
#: (pass, view) pairs compared: the server's whole request and the client's wall time.
MEASURES = [(p, v) for p in ("cold_embedding", "cached_embedding") for v in ("server", "client")]


def one_server(code: Path, data_dir: Path, questions: list[str]) -> dict[str, Any]:
    with running_api(data_dir, {}, code) as api:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=api.base, headers=headers) as http:
            for i, question in enumerate(questions[:WARMUP]):
                http.post("/v1/retrieve", json={"question": f"{question} (warm-up {i})"})
        return retrieve_path(api.base, questions, api.log)


def p50(part: dict[str, Any], view: str) -> float:
    return float(part["server_request_ms" if view == "server" else "client_ms"]["p50"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="git ref to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--data-dir", type=Path, default=REPO / ".covrag")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/serving")
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    questions = [
        json.loads(line)["question"]
        for line in (data_dir / "qa" / "test.jsonl").read_text().splitlines()
    ]
    load_start = os.getloadavg()
    base_tree = Path(tempfile.mkdtemp(prefix="covrag-ab-base-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(base_tree), args.base],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    rev = (
        subprocess.run(
            ["git", "rev-parse", "--short", args.base], cwd=REPO, check=True, capture_output=True
        )
        .stdout.decode()
        .strip()
    )
    versions = {"base": base_tree, "tree": REPO}
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "tree": []}
    try:
        for r in range(args.rounds):
            asked = [f"{q} (round {r})" for q in questions]
            for name in ("base", "tree") if r % 2 == 0 else ("tree", "base"):
                runs[name].append(one_server(versions[name], data_dir, asked))
                print(
                    f"round {r} {name}: "
                    + ", ".join(f"{p} {v} {p50(runs[name][-1][p], v)}" for p, v in MEASURES),
                    flush=True,
                )
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=REPO)
        shutil.rmtree(base_tree.parent, ignore_errors=True)
    verdict: dict[str, Any] = {}
    for p, v in MEASURES:
        rounds = zip(runs["base"], runs["tree"], strict=True)
        pairs = [(p50(b[p], v), p50(t[p], v)) for b, t in rounds]
        verdict[f"{p}_{v}_p50_ms"] = {
            "base": round(statistics.median(b for b, _ in pairs), 2),
            "tree": round(statistics.median(t for _, t in pairs), 2),
            "paired_difference_median": round(statistics.median(b - t for b, t in pairs), 2),
            "paired_ratio_median": round(statistics.median(t / b for b, t in pairs), 3),
            "rounds_tree_faster": sum(t < b for b, t in pairs),
        }
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_avg": {"start": load_start, "end": os.getloadavg()},
        "command": " ".join(["python -m bench.retrieve_ab", *sys.argv[1:]]),
        "base": rev,
        "rounds": args.rounds,
        "questions": len(questions),
        "verdict": verdict,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrieve_ab.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"| p50 ms ({args.rounds} rounds) | base {rev} | tree | paired Δ | ratio |")
    print("|---|---:|---:|---:|---:|")
    for key, v in verdict.items():
        print(
            f"| {key} | {v['base']} | {v['tree']} | {v['paired_difference_median']} | "
            f"{v['paired_ratio_median']} ({v['rounds_tree_faster']}/{args.rounds} faster) |"
        )


if __name__ == "__main__":
    main()
