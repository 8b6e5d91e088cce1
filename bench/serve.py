"""Serving benchmark: the cached-answer path under wrk, and the full chain under 32 clients.

    .venv/bin/python -m bench.serve [--generator-url URL] [--wrk-seconds 30] [--load-seconds 60]

Starts a real Redis and a real ``covrag serve`` (uvicorn, the demo ``wiki`` collection of
``.covrag``, API keys on, Redis cache and rate limiter) against a running vLLM worker, then:

1. cached path — one question answered once (real LLM), then wrk with 32 connections for
   ``--wrk-seconds`` POSTs it again and again: auth, rate limit, cache lookup, response;
   ``/healthz`` under the same wrk run gives the framework's own ceiling for a ratio;
2. the query path without the LLM — ``/v1/retrieve`` for every test question, one client,
   with a cold and then a cached question embedding (the non-LLM overhead an API node adds
   when its generator runs elsewhere);
3. full chain — 32 concurrent clients for ``--load-seconds``, each asking distinct test-split
   questions (cache misses) through every stage; every status is counted, 503s must carry
   ``Retry-After`` (clients honour it), any other 5xx is a failure; the API process's RSS is
   read after warm-up and at the end.

Writes ``bench/results/serving/serving.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.stats import percentiles
from tests.conftest import free_port
from tests.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]

KEY = "bench-key"
CACHED_QUESTION = "What is the capital of Somaliland?"
WRK_LUA = """
wrk.method = "POST"
wrk.body = '{"question": "%s"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@dataclass(frozen=True)
class Api:
    """A running ``covrag serve``: its URL, its process and its log (the JSON access log)."""

    base: str
    proc: subprocess.Popen[bytes]
    log: Path


@contextmanager
def running_api(data_dir: Path, env: dict[str, str], code: Path = REPO) -> Iterator[Api]:
    """A fresh Redis and ``covrag serve`` of the checkout at ``code`` on it (``data_dir``, API
    key ``KEY`` with no practical rate limit, plus ``env``), once ``/healthz`` answers; both
    are stopped after. Their scratch folder (Redis data, the API's log) is removed after a clean
    run and kept after a failure, for the log."""
    work = Path(tempfile.mkdtemp(prefix="covrag-bench-"))
    redis = RedisServer(work)
    redis.start()
    port = free_port()
    full_env = {
        "COVRAG_DATA_DIR": str(data_dir),
        "COVRAG_REDIS_URL": redis.url,
        "COVRAG_API_KEYS": json.dumps(
            [{"name": "bench", "key": KEY, "rate_limit_per_minute": 10_000_000}]
        ),
        **env,
    }
    log = work / "api.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli.commands", "serve", "--port", str(port)],
        cwd=code,
        env={**os.environ, **full_env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the API exited; see {log}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            raise RuntimeError("the API did not come up")
        yield Api(f"http://127.0.0.1:{port}", proc, log)
    finally:
        proc.terminate()
        proc.wait(60)
        redis.stop()
    shutil.rmtree(work, ignore_errors=True)


def wrk(url: str, seconds: int, script: Path | None, connections: int = 32) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) from ``wrk --latency``."""
    threads = min(2, connections)
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "90", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        assert m is not None, out
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        result[f"p{pct}_ms"] = round(float(m.group(1)) * scale, 3)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    return result


def retrieve_path(base: str, questions: list[str], access_log: Path) -> dict[str, Any]:
    """The query path without the LLM: ``/v1/retrieve`` (embed, conformal search, HTTP, auth),
    one client, each question once with a cold and once with a cached embedding. Sequential
    and with no LLM call between, as on an API node whose generator runs elsewhere.

    Three views of each request: the client's wall time (its own HTTP stack included), the
    server's whole request (the access log's ``duration_ms``: request in to response sent,
    routing, auth and rate limit included) and the pipeline's stage timings."""
    out: dict[str, Any] = {"questions": len(questions)}
    request_ids: dict[str, list[str]] = {}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        for name in ("cold_embedding", "cached_embedding"):
            wall: list[float] = []
            stages: dict[str, list[float]] = {}
            for question in questions:
                start = time.perf_counter()
                r = http.post("/v1/retrieve", json={"question": question})
                wall.append((time.perf_counter() - start) * 1000)
                r.raise_for_status()
                request_ids.setdefault(name, []).append(r.headers["x-request-id"])
                for stage, ms in r.json()["timings_ms"].items():
                    stages.setdefault(stage, []).append(ms)
            out[name] = {
                "client_ms": percentiles(wall),
                "server_ms": {stage: percentiles(v) for stage, v in stages.items()},
            }
    time.sleep(0.5)  # the last access-log lines reach the file
    durations = {
        row["request_id"]: row["duration_ms"]
        for row in (
            json.loads(line)  # the JSON log lines; the startup banner is plain text
            for line in access_log.read_text().splitlines()
            if line.startswith("{")
        )
        if row.get("logger") == "covrag.access"
    }
    for name, ids in request_ids.items():
        out[name]["server_request_ms"] = percentiles([durations[i] for i in ids])
    return out


async def load(base: str, questions: list[str], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` loops asking distinct questions until ``seconds`` pass; a 503 must say
    when to retry, and the client waits that long (capped) before its next question."""
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    missing_retry_after = 0
    queue = iter(questions)
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {KEY}"}

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal missing_retry_after
        while time.monotonic() < deadline:
            question = next(queue, None)
            if question is None:
                return
            start = time.perf_counter()
            r = await http.post("/v1/query", json={"question": question}, headers=headers)
            statuses[str(r.status_code)] += 1
            if r.status_code == 200:
                latencies.append(time.perf_counter() - start)
            elif r.status_code in (429, 503):
                if "retry-after" not in r.headers:
                    missing_retry_after += 1
                await asyncio.sleep(min(float(r.headers.get("retry-after", 1)), 5))

    async with httpx.AsyncClient(base_url=base, timeout=600) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    other_5xx = sum(n for s, n in statuses.items() if s.startswith("5") and s != "503")
    return {
        "clients": clients,
        "seconds": seconds,
        "statuses": dict(statuses),
        "other_5xx": other_5xx,
        "503_without_retry_after": missing_retry_after,
        "answered": len(latencies),
        "latency_s_p50": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
        "latency_s_p95": round(float(np.percentile(latencies, 95)), 2) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator-url", default="http://127.0.0.1:8100/v1")
    parser.add_argument("--data-dir", type=Path, default=REPO / ".covrag")
    parser.add_argument("--wrk-seconds", type=int, default=30)
    parser.add_argument("--load-seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-concurrency", type=int, default=4, help="generator calls in flight")
    parser.add_argument("--max-queue", type=int, default=8, help="generator calls waiting")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/serving")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join(["python -m bench.serve", *sys.argv[1:]]),
        "api": "1 uvicorn process, Redis cache + rate limiter, API key auth, JSON access log",
        "generator": f"max_concurrency {args.max_concurrency}, max_queue {args.max_queue}",
        "load_avg": {"start": os.getloadavg()},
    }
    env = {
        "COVRAG_GENERATOR_URLS": args.generator_url,
        "COVRAG_GENERATOR_TIMEOUT_S": "300",
        "COVRAG_GENERATOR_MAX_CONCURRENCY": str(args.max_concurrency),
        "COVRAG_GENERATOR_MAX_QUEUE": str(args.max_queue),
    }
    with running_api(args.data_dir, env) as api:
        headers = {"Authorization": f"Bearer {KEY}"}
        first = httpx.post(
            f"{api.base}/v1/query", json={"question": CACHED_QUESTION}, headers=headers, timeout=600
        )
        first.raise_for_status()
        again = httpx.post(
            f"{api.base}/v1/query", json={"question": CACHED_QUESTION}, headers=headers
        )
        assert again.json()["cached"] is True, again.text
        script = api.log.with_name("query.lua")
        script.write_text(WRK_LUA % (CACHED_QUESTION, KEY))
        result["healthz"] = wrk(f"{api.base}/healthz", args.wrk_seconds, None)
        result["cached_query"] = wrk(f"{api.base}/v1/query", args.wrk_seconds, script)
        # One connection: the service time itself (with 32 in flight, p50 ≈ 32 / throughput).
        result["cached_query_1conn"] = wrk(f"{api.base}/v1/query", 10, script, connections=1)
        result["cached_vs_healthz"] = round(
            result["cached_query"]["rps"] / result["healthz"]["rps"], 3
        )
        questions = [
            json.loads(line)["question"]
            for path in ("test.jsonl", "unanswerable_test.jsonl")
            for line in (args.data_dir / "qa" / path).read_text().splitlines()
        ]
        result["retrieve_path"] = retrieve_path(api.base, questions, api.log)
        rss_start = rss_mb(api.proc.pid)
        result["full_chain"] = asyncio.run(
            load(api.base, questions, args.clients, args.load_seconds)
        )
        rss_end = rss_mb(api.proc.pid)
        result["full_chain"]["rss_mb_start"] = round(rss_start, 1)
        result["full_chain"]["rss_mb_end"] = round(rss_end, 1)
        result["full_chain"]["rss_change_pct"] = round(100 * (rss_end - rss_start) / rss_start, 1)
        result["metrics_sample"] = [
            line
            for line in httpx.get(f"{api.base}/metrics").text.splitlines()
            if line.startswith(("covrag_http_requests_total", "covrag_cache_requests_total"))
        ][:20]
    result["load_avg"]["end"] = os.getloadavg()
    (args.out / "serving.json").write_text(json.dumps(result, indent=2) + "\n")
    c, h, f = result["cached_query"], result["healthz"], result["full_chain"]
    print("| measure | value |\n|---|---|")
    print(
        f"| cached /v1/query, wrk 32 conns {args.wrk_seconds} s | {c['rps']:.0f} req/s, "
        f"p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms, non-2xx {c['non_2xx']} |"
    )
    one = result["cached_query_1conn"]
    print(f"| cached /v1/query, 1 connection | p50 {one['p50_ms']} ms, p99 {one['p99_ms']} ms |")
    print(f"| /healthz, same wrk | {h['rps']:.0f} req/s, p50 {h['p50_ms']} ms |")
    print(
        f"| full chain, {f['clients']} clients {f['seconds']:.0f} s | statuses {f['statuses']}, "
        f"other 5xx {f['other_5xx']}, 503 w/o Retry-After {f['503_without_retry_after']} |"
    )
    for name, part in result["retrieve_path"].items():
        if isinstance(part, dict):
            ms, whole = part["client_ms"], part["server_request_ms"]
            print(
                f"| /v1/retrieve, 1 client, {name} | client p50 {ms['p50']} ms, p95 {ms['p95']} "
                f"ms, p99 {ms['p99']} ms; server request p50 {whole['p50']} ms, p99 "
                f"{whole['p99']} ms (stages: {part['server_ms']}) |"
            )
    print(
        f"| API RSS start → end | {f['rss_mb_start']} → {f['rss_mb_end']} MB "
        f"({f['rss_change_pct']:+} %) |"
    )


if __name__ == "__main__":
    main()
