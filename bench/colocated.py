"""The vLLM CPU worker and the API on the same cores: vLLM's defaults against covrag's settings.

    .venv/bin/python -m bench.colocated [--rounds 20] [--out bench/results/colocated]

On a CPU-only machine (``make run``, the tests, the compose ``cpu`` profile on one host) the
generator and the API's embedder share the cores. vLLM CPU by default runs the model in a
worker process on all cores but one, and both that worker and the engine busy-poll their
shared-memory queue for 1 s after each step. covrag's worker settings (``workers/vllm.py``,
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` and the OMP threads) run the model in the engine process on
every core. This starts one real worker with each, one after the other on the same machine, and
measures per configuration:

1. the generator: RAG-sized requests (five demo-corpus summaries and a question, ~555 prompt
   tokens, exactly 64 completion tokens), one and four in flight;
2. the API's side: a question embedding (the in-process ONNX embedder, as ``/v1/query`` runs
   it) right after a generator call, and the same after 2 s idle;
3. the CPU the worker's processes burn in the 2 s after a call returns (the busy-polling).

Writes ``colocated.json`` under ``--out`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.stats import percentiles
from retrieval.corpus import fetch_wiki, load_wiki
from retrieval.embed.onnx import OnnxEmbedder
from tests.conftest import free_port
from workers.models import GENERATOR_NAME, prepare_generator_model
from workers.process import group_members, stop_worker
from workers.vllm import launch_worker

REPO = Path(__file__).resolve().parents[1]

CACHE = REPO / ".covrag"
#: vLLM CPU's own behaviour, set back over covrag's worker settings.
CONFIGS: dict[str, dict[str, str]] = {
    "vllm_default": {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"},
    "covrag": {},
}
PROMPTS = 8
COMPLETION_TOKENS = 64


def cpu_seconds(pid: int) -> float:
    """User + system CPU of every process in ``pid``'s process group (the worker's session)."""
    ticks = sum(int(stat[11]) + int(stat[12]) for stat in group_members(pid).values())
    return ticks / os.sysconf("SC_CLK_TCK")


async def generator_speed(url: str, prompts: list[str]) -> dict[str, Any]:
    """Fixed work per request (``ignore_eos``), so the two configurations do the same."""

    async def one(http: httpx.AsyncClient, prompt: str) -> tuple[float, int]:
        start = time.perf_counter()
        r = await http.post(
            "/chat/completions",
            json={
                "model": GENERATOR_NAME,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": COMPLETION_TOKENS,
                "temperature": 0,
                "ignore_eos": True,
            },
        )
        r.raise_for_status()
        return time.perf_counter() - start, r.json()["usage"]["prompt_tokens"]

    out: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        await one(http, prompts[0])  # warm-up
        for in_flight in (1, 4):
            start = time.perf_counter()
            done: list[tuple[float, int]] = []
            for i in range(0, len(prompts), in_flight):
                batch = prompts[i : i + in_flight]
                done += await asyncio.gather(*(one(http, p) for p in batch))
            wall = time.perf_counter() - start
            out[f"in_flight_{in_flight}"] = {
                "request_s_p50": round(float(np.median([d[0] for d in done])), 2),
                "completion_tok_per_s": round(len(done) * COMPLETION_TOKENS / wall, 1),
                "prompt_tokens_mean": round(float(np.mean([d[1] for d in done]))),
            }
    return out


def after_a_call(
    url: str, pid: int, embedder: OnnxEmbedder, questions: list[str], rounds: int
) -> dict[str, Any]:
    """A question embedding right after a generator call and after 2 s idle; the worker's CPU
    in the 2 s after each call."""
    right_after: list[float] = []
    idle: list[float] = []
    burnt: list[float] = []
    with httpx.Client(base_url=url, timeout=600) as http:
        for i in range(rounds):
            for sink, pause in ((right_after, 0.0), (idle, 2.0)):
                r = http.post(
                    "/chat/completions",
                    json={
                        "model": GENERATOR_NAME,
                        "messages": [{"role": "user", "content": questions[i]}],
                        "max_tokens": 24,
                    },
                )
                r.raise_for_status()
                cpu = cpu_seconds(pid) if pause else 0.0  # no /proc scan before "right after"
                time.sleep(pause)
                start = time.perf_counter()
                embedder.embed([questions[-1 - i]])
                sink.append((time.perf_counter() - start) * 1000)
                if pause:
                    burnt.append(cpu_seconds(pid) - cpu)
    return {
        "embed_right_after_ms": percentiles(right_after),
        "embed_after_2s_idle_ms": percentiles(idle),
        "worker_cpu_s_in_2s_after_a_call": round(float(np.median(burnt)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="generator calls per measurement")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/colocated")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    vllm_python = REPO / ".venv-vllm/bin/python"
    model = prepare_generator_model(CACHE / "models", vllm_python)
    docs = load_wiki(fetch_wiki(CACHE / "corpus"))
    prompts = [
        "\n\n".join(f"{d.title}. {d.text[:600]}" for d in docs[i * 5 : (i + 1) * 5])
        + "\n\nQuestion: what is the first passage about? Answer briefly."
        for i in range(PROMPTS)
    ]
    questions = [
        json.loads(line)["question"]
        for line in (CACHE / "qa" / "test.jsonl").read_text().splitlines()
    ][: 2 * args.rounds]
    embedder = OnnxEmbedder()
    embedder.embed(questions[:4])
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join(["python -m bench.colocated", *sys.argv[1:]]),
        "configs": CONFIGS,
    }
    for name, env in CONFIGS.items():
        with tempfile.TemporaryDirectory() as logs:
            handle = launch_worker(
                "generate",
                model_dir=model,
                port=free_port(),
                vllm_python=vllm_python,
                logs_dir=Path(logs),
                env=env,
            )
            try:
                result[name] = {
                    "generator": asyncio.run(generator_speed(handle.url, prompts)),
                    **after_a_call(handle.url, handle.pid, embedder, questions, args.rounds),
                }
            finally:
                stop_worker(handle)
        print(json.dumps({name: result[name]}), flush=True)
    (args.out / "colocated.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


def table(result: dict[str, Any]) -> str:
    rows = [
        "| | vLLM CPU defaults | covrag's worker settings |",
        "|---|---:|---:|",
    ]
    base, ours = result["vllm_default"], result["covrag"]
    for flight in ("in_flight_1", "in_flight_4"):
        a, b = base["generator"][flight], ours["generator"][flight]
        n = flight.rsplit("_", 1)[1]
        for key, label in (
            ("request_s_p50", "request p50 s"),
            ("completion_tok_per_s", "completion tok/s"),
        ):
            rows.append(f"| {label}, {n} in flight | {a[key]} | {b[key]} |")
    for key, label in (
        ("embed_right_after_ms", "question embedding right after a call, ms"),
        ("embed_after_2s_idle_ms", "question embedding after 2 s idle, ms"),
    ):
        rows.append(
            f"| {label}, p50 / p95 | {base[key]['p50']} / {base[key]['p95']} "
            f"| {ours[key]['p50']} / {ours[key]['p95']} |"
        )
    key = "worker_cpu_s_in_2s_after_a_call"
    rows.append(f"| worker CPU s in the 2 s after a call | {base[key]} | {ours[key]} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
