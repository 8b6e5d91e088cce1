"""Faults toward the dependencies: each gives a clean error envelope fast, never a hang.

The real vLLM CPU worker is SIGKILLed mid-request and restarted; fakes appear only to inject
a failure a real part cannot be made to show on demand (a replica that accepts and never
answers, a stream too slow to finish, an embedding worker that only errs), and are named so.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.config import Settings
from app.main import create_app
from llm import (
    CircuitBreaker,
    GeneratorBusy,
    GeneratorTimeout,
    GeneratorUnavailable,
    VLLMGenerator,
)
from retrieval.embed.remote import RemoteEmbedder
from retrieval.errors import EmbedderUnavailable
from retrieval.types import Document
from tests.app.jobs_helper import ingest
from tests.app.test_streaming import QUESTION, SlowVLLM, _docs, _serve
from tests.conftest import CACHE_DIR, REPO, free_port
from workers.models import GENERATOR_NAME, prepare_generator_model
from workers.process import WorkerHandle, group_members, stop_worker
from workers.vllm import find_running, launch_worker

MESSAGES = [{"role": "user", "content": "Say hi."}]


def _question(n: int) -> dict[str, Any]:
    """A distinct question each time: the answer cache must not answer for the generator."""
    return {**QUESTION, "question": f"{QUESTION['question']} ({n})"}


def _envelope(r: httpx.Response, status: set[int], type_: str | None = None) -> dict[str, Any]:
    assert r.status_code in status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["message"] and r.json()["request_id"] == r.headers["X-Request-ID"]
    assert type_ is None or error["type"] == type_, error
    return error


# -- the circuit breaker on its own -----------------------------------------------------------


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failures=3, cooldown_s=10, clock=Clock())
    breaker.failure("connect")
    breaker.failure("reset")
    breaker.success()  # the run is broken: counting starts again
    breaker.failure("http_5xx")
    breaker.failure("timeout")
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure("connect")
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.consecutive_failures == 3
    assert dict(breaker.errors_total) == {"connect": 2, "reset": 1, "http_5xx": 1, "timeout": 1}


def test_breaker_half_opens_for_one_trial_after_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_s=10, clock=clock)
    breaker.failure("connect")
    clock.now += 4
    assert breaker.retry_after() == 6 and breaker.blocked
    breaker.failure("connect")  # a call sent before it opened: the cool-down is not prolonged
    clock.now += 6
    assert breaker.state == "half_open" and breaker.allow()  # the trial
    assert breaker.blocked and not breaker.allow()  # nobody else while it is out
    breaker.failure("timeout")  # the trial failed: open for a fresh cool-down
    assert breaker.state == "open" and breaker.retry_after() == 10
    clock.now += 10
    assert breaker.allow()
    breaker.abandon()  # the trial's client went away: the next call may try
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.consecutive_failures == 0
    assert breaker.allow() and breaker.allow()


# -- a dead, hung or slow replica, in process -------------------------------------------------


class HungReplica:
    """Failure injection: a listening socket that is never read; connections complete in the
    kernel's backlog and no reply ever comes, like a wedged worker."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"


@pytest.fixture
def hung() -> Iterator[HungReplica]:
    replica = HungReplica()
    yield replica
    replica.sock.close()


@pytest.fixture
def slow_url() -> Iterator[str]:
    server, thread, base = _serve(SlowVLLM().app)
    yield base + "/v1"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.mark.anyio
async def test_open_breakers_fail_fast_with_retry_after() -> None:
    dead = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    gen = VLLMGenerator(dead, model="m", breaker_failures=1, breaker_cooldown_s=30)
    try:
        with pytest.raises(GeneratorUnavailable) as first:
            await gen.complete(MESSAGES, max_tokens=4, temperature=0)
        assert "ConnectError" in str(first.value)  # both tried, both refused: both open now
        assert first.value.retry_after is not None and 29 < first.value.retry_after <= 30
        start = time.monotonic()
        with pytest.raises(GeneratorUnavailable, match="circuit breaker is open") as fast:
            await gen.complete(MESSAGES, max_tokens=4, temperature=0)
        assert time.monotonic() - start < 0.05 and fast.value.retry_after is not None
        assert [(r.state, r.errors_total) for r in gen.replicas()] == [("open", {"connect": 1})] * 2
    finally:
        await gen.aclose()


@pytest.mark.anyio
async def test_ping_retries_with_backoff_then_gives_up() -> None:
    gen = VLLMGenerator([f"http://127.0.0.1:{free_port()}/v1"], model="m", breaker_failures=5)
    try:
        with pytest.raises(GeneratorUnavailable):
            await gen.ping()
        [replica] = gen.replicas()
        assert replica.errors_total == {"connect": 3} and replica.state == "closed"
    finally:
        await gen.aclose()


@pytest.mark.anyio
async def test_queue_is_bounded_waiting_counts_against_the_deadline(slow_url: str) -> None:
    gen = VLLMGenerator(
        [slow_url], model="m", timeout_s=2.0, max_concurrency=1, max_queue=1, breaker_failures=9
    )
    started = asyncio.Event()

    async def first_text(_: str) -> None:
        started.set()

    try:
        holder = asyncio.create_task(
            gen.complete(MESSAGES, max_tokens=4, temperature=0, on_text=first_text)
        )
        await started.wait()  # streaming: it holds the one slot until its stream ends
        begun = time.monotonic()
        waiter = asyncio.create_task(gen.complete(MESSAGES, max_tokens=4, temperature=0))
        await asyncio.sleep(0.1)
        with pytest.raises(GeneratorBusy) as busy:  # one in flight, one waiting: full
            await gen.complete(MESSAGES, max_tokens=4, temperature=0)
        assert busy.value.retry_after == 1.0
        with pytest.raises(GeneratorTimeout):
            await holder
        with pytest.raises(GeneratorTimeout):
            await waiter  # its 2 s included the wait: not 2 s after it got the slot
        assert time.monotonic() - begun < 2.8
        # a cancelled stream gives its slot back at once
        streaming = asyncio.create_task(
            gen.complete(MESSAGES, max_tokens=4, temperature=0, on_text=first_text)
        )
        started.clear()
        await started.wait()
        streaming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await streaming
        # the waiter may time out in the queue or at the replica, as the machine's load has it
        before = gen.replicas()[0].errors_total.get("timeout", 0)
        assert before >= 2
        with pytest.raises(GeneratorTimeout):  # admitted (not busy), then SlowVLLM is too slow
            await gen.complete(MESSAGES, max_tokens=4, temperature=0)
        assert gen.replicas()[0].errors_total == {"timeout": before + 1}
    finally:
        await gen.aclose()


class BrokenEmbeddingWorker:
    """Failure injection: an embeddings endpoint answering only ``status``, counting calls."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.calls = 0
        self.app = Starlette(routes=[Route("/v1/embeddings", self.embed, methods=["POST"])])

    async def embed(self, request: Request) -> JSONResponse:
        self.calls += 1
        return JSONResponse({"error": "injected"}, status_code=self.status)


@pytest.mark.parametrize(("status", "calls"), [(503, 3), (400, 1)])
def test_remote_embedder_retries_only_transient_failures(status: int, calls: int) -> None:
    worker = BrokenEmbeddingWorker(status)
    server, thread, base = _serve(worker.app)
    embedder = RemoteEmbedder(base + "/v1", retries=2)
    try:
        with pytest.raises(EmbedderUnavailable, match=str(status)):
            embedder.embed(["a question"])
        assert worker.calls == calls
    finally:
        embedder.close()
        server.should_exit = True
        thread.join(timeout=30)


# -- the same faults through the HTTP API -----------------------------------------------------


def test_hung_replica_gives_504_within_the_deadline(
    settings: Settings, wiki_sample: list[Document], hung: HungReplica
) -> None:
    s = settings.updated(generator={"urls": [hung.url], "timeout_s": 3.0})
    with TestClient(create_app(s)) as client:
        ingest(client, "wiki", _docs(wiki_sample[:5]))
        start = time.monotonic()
        r = client.post("/v1/query", json=QUESTION)
        elapsed = time.monotonic() - start
        _envelope(r, {504}, "generator_timeout")
        assert 3.0 <= elapsed < 8.0
        [replica] = client.app.state.services.generator.replicas()  # type: ignore[attr-defined]
        assert replica.errors_total == {"timeout": 1}


def test_full_queue_gives_503_generator_busy(
    settings: Settings, wiki_sample: list[Document], slow_url: str
) -> None:
    s = settings.updated(generator={"urls": [slow_url], "max_concurrency": 1, "max_queue": 0})
    server, thread, base = _serve(create_app(s))
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            ingest(client, "wiki", _docs(wiki_sample[:5]))
            with client.stream("POST", "/v1/query", json={**QUESTION, "stream": True}) as held:
                assert held.status_code == 200
                lines = held.iter_lines()  # kept: closing the iterator would hang up
                assert "event: token" in lines  # streaming: the one slot is taken
                r = client.post("/v1/query", json=_question(1))
                lines.close()
            _envelope(r, {503}, "generator_busy")
            assert r.headers["Retry-After"] == "1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")  # no server: expected
def test_store_unavailable_gives_503(settings: Settings) -> None:
    s = settings.updated(
        store={
            "kind": "qdrant",
            "qdrant_url": f"http://127.0.0.1:{free_port()}",
            "qdrant_timeout_s": 1.0,
        }
    )
    with TestClient(create_app(s)) as client:
        start = time.monotonic()
        r = client.post("/v1/query", json=QUESTION)
        _envelope(r, {503}, "store_unavailable")
        assert time.monotonic() - start < 10
        assert r.headers["Retry-After"] == "5"


@pytest.mark.integration
def test_dead_replica_is_failed_over_and_its_breaker_opens(
    settings: Settings, wiki_sample: list[Document], generator_url: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    # A cooldown no answer outlasts: on a loaded machine an answer can take longer than the
    # default 10 s, and the breaker would let a trial call through to the dead replica.
    s = settings.updated(
        generator={"urls": [dead, generator_url], "breaker_failures": 2, "breaker_cooldown_s": 600}
    )
    with TestClient(create_app(s)) as client:
        ingest(client, "wiki", _docs(wiki_sample[:5]))
        generator = client.app.state.services.generator  # type: ignore[attr-defined]
        for n in range(6):
            r = client.post("/v1/query", json=_question(n))
            assert r.status_code == 200, r.text
            if generator.replicas()[0].state == "open":
                break
        down, up = generator.replicas()
        assert (down.state, down.errors_total) == ("open", {"connect": 2})
        assert (up.state, up.errors_total) == ("closed", {})


# -- a real worker killed mid-request, then restarted -----------------------------------------


class OwnWorker:
    """A real vLLM CPU worker of this module's own (never the shared one), to kill and restart
    on the same port."""

    handle: WorkerHandle

    def __init__(self, logs_dir: Path) -> None:
        self.vllm_python = Path(
            os.environ.get("COVRAG_VLLM_PYTHON", REPO / ".venv-vllm/bin/python")
        )
        self.model_dir = prepare_generator_model(CACHE_DIR / "models", self.vllm_python)
        self.logs_dir = logs_dir
        self.port = free_port()
        self.start()

    def start(self) -> None:
        self.handle = launch_worker(
            "generate",
            model_dir=self.model_dir,
            port=self.port,
            vllm_python=self.vllm_python,
            logs_dir=self.logs_dir,
        )

    def environ(self) -> list[bytes]:
        """The server's environment, ``NAME=value`` each (the engine retitles itself over its
        own environment block)."""
        return Path(f"/proc/{self.handle.pid}/environ").read_bytes().split(b"\0")

    def scratch(self) -> Path:
        """The temporary folder covrag gave the running worker (its TMPDIR)."""
        [path] = [v.split(b"=", 1)[1] for v in self.environ() if v.startswith(b"TMPDIR=")]
        return Path(path.decode())

    def kill(self) -> None:
        """SIGKILL the whole group (API server and engine core): no shutdown hook runs."""
        os.killpg(self.handle.pid, signal.SIGKILL)
        stop_worker(self.handle)  # reaps it and removes the pidfile

    def log_tail(self, lines: int = 40) -> str:
        """The end of the worker's newest log, to say why it failed."""
        logs = sorted(self.logs_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
        return "\n".join(logs[-1].read_text().splitlines()[-lines:]) if logs else ""

    def wait_generating(self, timeout_s: float = 60) -> None:
        """Until the worker reports a request running (its Prometheus gauge)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = httpx.get(self.handle.url.removesuffix("/v1") + "/metrics").text
            running = [
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("vllm:num_requests_running")
            ]
            if sum(running) > 0:
                return
            time.sleep(0.02)
        raise AssertionError("the query never reached the worker")


@pytest.fixture(scope="module")
def own_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnWorker]:
    worker = OwnWorker(tmp_path_factory.mktemp("vllm-faults"))
    try:
        yield worker
    finally:
        stop_worker(worker.handle)


def test_a_dead_workers_pidfile_and_scratch_folder_go_and_nothing_else(tmp_path: Path) -> None:
    """A worker that died unseen: the next look removes its pidfile and scratch folder, but
    never a folder not named like one covrag makes, whatever a damaged pidfile says."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    for name, removed in [("covrag-worker-x", True), ("precious", False)]:
        scratch = tmp_path / name
        (scratch / "sub").mkdir(parents=True)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(scratch / "s"))  # short: a socket's path has at most 107 bytes
        (scratch / "sub" / "vllm_dist_1").write_text("rendezvous")
        port = free_port()
        pidfile = tmp_path / f"vllm-generate-{port}.pid"
        pidfile.write_text(f"{gone.pid}\n{scratch}\n")
        assert find_running("generate", port, tmp_path) is None
        assert not pidfile.exists()
        assert scratch.exists() is not removed, name


@pytest.mark.integration
def test_the_model_runs_in_the_engine_process(own_worker: OwnWorker) -> None:
    """covrag's worker settings: no separate model process, whose shared-memory queue would
    busy-poll a core for 1 s after every call (``bench/colocated.py`` measures what it cost),
    and the engine's OMP threads on every core."""
    r = httpx.post(
        f"{own_worker.handle.url}/chat/completions",
        json={
            "model": GENERATOR_NAME,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
        },
        timeout=120,
    )
    r.raise_for_status()
    group = {
        pid: Path(f"/proc/{pid}/comm").read_text().strip()
        for pid in group_members(own_worker.handle.pid)
    }
    engines = [pid for pid, name in group.items() if name.startswith("VLLM::EngineCor")]
    assert len(engines) == 1, group
    assert not [name for name in group.values() if name.startswith("VLLM::Worker")], group
    cores = os.environ.get("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    assert f"OMP_NUM_THREADS={cores}".encode() in own_worker.environ()


@pytest.mark.integration
def test_worker_killed_mid_request_then_restarted(
    settings: Settings, wiki_sample: list[Document], own_worker: OwnWorker
) -> None:
    cooldown = 3.0
    s = settings.updated(
        generator={
            "urls": [own_worker.handle.url],
            "breaker_failures": 2,
            "breaker_cooldown_s": cooldown,
        }
    )
    with TestClient(create_app(s)) as client, ThreadPoolExecutor(1) as pool:
        ingest(client, "wiki", _docs(wiki_sample[:5]))
        in_flight = pool.submit(client.post, "/v1/query", json=_question(1))
        own_worker.wait_generating()
        scratch = own_worker.scratch()
        assert [p for p in scratch.iterdir() if p.is_socket()], "vLLM made no sockets there"
        own_worker.kill()
        _envelope(in_flight.result(timeout=60), {503, 504})
        assert not scratch.exists()  # vLLM's sockets went too, though SIGKILL ran no hook

        r = client.post("/v1/query", json=_question(2))  # refused: the 2nd failure opens it
        _envelope(r, {503}, "generator_unavailable")
        start = time.monotonic()
        r = client.post("/v1/query", json=_question(3))
        error = _envelope(r, {503}, "generator_unavailable")
        assert "circuit breaker is open" in error["message"]
        assert time.monotonic() - start < 1.0  # no connect attempt: failed fast
        assert 1 <= int(r.headers["Retry-After"]) <= cooldown
        ready = client.get("/readyz")  # the pod still serves retrieval: ready, and says why not
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["generator"].startswith("failed")

        own_worker.start()  # same port; takes far longer than the cool-down
        for n in range(4, 9):  # a client honouring Retry-After; the first is the half-open trial
            r = client.post("/v1/query", json=_question(n))
            if r.status_code == 200:
                break
            time.sleep(min(float(r.headers.get("Retry-After", 1)), cooldown))
        assert r.status_code == 200, (r.text, own_worker.log_tail())
        assert r.json()["answer"]
        assert client.get("/readyz").json()["status"] == "ready"  # generator back, no restart
        [replica] = client.app.state.services.generator.replicas()  # type: ignore[attr-defined]
        assert replica.state == "closed" and replica.consecutive_failures == 0
