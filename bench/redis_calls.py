"""The per-request Redis call, redis-py against the pipelined connection, side by side.

    .venv/bin/python -m bench.redis_calls [--calls 20000] [--callers 32] [--rounds 3]

Starts a real Redis and runs the cached-answer path's script (rate-limit token, then the
version and entry lookup: ``app.state.cache.TAKE_THEN_LOOKUP``) from ``--callers`` coroutines at
once, alternating redis-py's ``register_script`` and ``app.state.redis_pipe.PipelinedRedis`` for
``--rounds`` rounds. Reports this process's CPU time per call (what a busy API process pays)
and calls per second. Writes ``bench/results/redis/redis_calls.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio

from app.state.cache import TAKE_THEN_LOOKUP
from app.state.redis_pipe import PipelinedRedis
from tests.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]

KEYS = ["covrag:rl:bench", "covrag:cv:wiki"]
ARGS: list[str | float] = [1e9, 1e9, 1000, "covrag:ans:wiki:", "digest"]


async def measure(call: Callable[[], Awaitable[Any]], calls: int, callers: int) -> dict[str, float]:
    async def caller(n: int) -> None:
        for _ in range(n):
            await call()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller(calls // callers) for _ in range(callers)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = calls // callers * callers
    return {"cpu_us_per_call": round(cpu / done * 1e6, 1), "calls_per_s": round(done / wall)}


async def compare(url: str, calls: int, callers: int, rounds: int) -> dict[str, list[Any]]:
    client = redis.asyncio.Redis.from_url(url, socket_timeout=2)
    pipe = PipelinedRedis.from_url(url, timeout_s=2)
    scripts = {
        "redis-py": client.register_script(TAKE_THEN_LOOKUP),
        "pipelined": pipe.register_script(TAKE_THEN_LOOKUP),
    }
    out: dict[str, list[Any]] = {name: [] for name in scripts}
    try:
        for script in scripts.values():  # warm: scripts loaded, connections open
            await script(keys=KEYS, args=ARGS)
        for _ in range(rounds):
            for name, script in scripts.items():

                def call(script: Any = script) -> Awaitable[Any]:
                    return script(keys=KEYS, args=ARGS)

                out[name].append(await measure(call, calls, callers))
    finally:
        await client.aclose()
        await pipe.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/redis")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            runs = asyncio.run(compare(server.url, args.calls, args.callers, args.rounds))
        finally:
            server.stop()
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.redis_calls", *sys.argv[1:]]),
        "callers": args.callers,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "redis_calls.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| client | CPU µs per call (each round) | calls/s (each round) |\n|---|---|---|")
    for name, rows in runs.items():
        cpu = " / ".join(f"{r['cpu_us_per_call']}" for r in rows)
        rate = " / ".join(f"{r['calls_per_s']:,}" for r in rows)
        print(f"| {name} | {cpu} | {rate} |")


if __name__ == "__main__":
    main()
