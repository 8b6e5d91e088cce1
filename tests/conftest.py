"""Shared fixtures: real models, real stores, and a real vLLM CPU worker per test session.

Set ``COVRAG_TEST_GENERATOR_URL`` (and ``COVRAG_TEST_EMBEDDER_URL``) to reuse running workers;
otherwise the fixtures start them with ``workers.vllm`` (models from ``workers.models``) and stop
them at the end.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from retrieval.corpus import fetch_wiki, load_wiki
from retrieval.embed import Embedder, make_embedder
from retrieval.types import Document
from tests.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
#: Models and the corpus download are cached here across runs (gitignored), like `make run` does.
CACHE_DIR = Path(os.environ.get("COVRAG_TEST_CACHE", REPO / ".covrag"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return make_embedder("onnx")


@pytest.fixture(scope="session")
def wiki_docs() -> list[Document]:
    return load_wiki(fetch_wiki(CACHE_DIR / "corpus"))


@pytest.fixture(scope="session")
def wiki_sample(wiki_docs: list[Document]) -> list[Document]:
    """A small, fixed slice of the real corpus, with a few known articles in it."""
    wanted = {"Hubble Space Telescope", "Somaliland", "Eiffel Tower", "Carnivora", "Mount Everest"}
    picked = [d for d in wiki_docs if d.id in wanted]
    return picked + [d for d in wiki_docs[:: len(wiki_docs) // 40] if d.id not in wanted]


@pytest.fixture(scope="session")
def reranker_dir(
    wiki_sample: list[Document], embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A reranker trained for plumbing, not skill: one layer, one epoch, 30 title questions
    over ``wiki_sample`` (tests/retrieval/test_rerank.py; bench/rerank.py measures skill)."""
    from retrieval.calibration_set import CalibrationItem
    from retrieval.embed.onnx import minilm_dir
    from retrieval.ingest import Ingestor
    from retrieval.rerank_train import fine_tune, training_groups
    from retrieval.store import EdgeStore

    store = EdgeStore(tmp_path_factory.mktemp("rerank-train"))
    try:
        Ingestor(store, embedder, chunk_words=160, chunk_overlap=32).ingest("t", wiki_sample)
        items = [
            CalibrationItem(id=d.id, question=f"What is {d.title}?", gold_doc_ids=(d.id,))
            for d in wiki_sample[:30]
        ]
        groups = training_groups(store, embedder, "t", items, candidates=8, negatives=3, seed=0)
    finally:
        store.close()
    out = tmp_path_factory.mktemp("reranker") / "reranker"
    fine_tune(groups, out, minilm_dir(), layers=1, epochs=1, seed=0, max_tokens=96)
    return out


@pytest.fixture(scope="session")
def reranker_worker_url(
    reranker_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Base URL of a real critic worker process serving ``reranker_dir`` alone."""
    from workers.critic_server import launch_critic_worker
    from workers.process import stop_worker

    logs = tmp_path_factory.mktemp("reranker-worker")
    handle = launch_critic_worker(None, free_port(), logs, timeout_s=180, reranker_dir=reranker_dir)
    try:
        yield handle.url
    finally:
        stop_worker(handle)


def _worker(kind: str, env_var: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from workers.models import prepare_embedding_model, prepare_generator_model
    from workers.process import stop_worker
    from workers.vllm import launch_worker

    if os.environ.get(env_var):
        yield os.environ[env_var]
        return
    vllm_python = Path(os.environ.get("COVRAG_VLLM_PYTHON", REPO / ".venv-vllm/bin/python"))
    models = CACHE_DIR / "models"
    model_dir = (
        prepare_generator_model(models, vllm_python)
        if kind == "generate"
        else prepare_embedding_model(models)
    )
    logs = tmp_path_factory.mktemp(f"vllm-{kind}")
    handle = launch_worker(
        kind,  # type: ignore[arg-type]
        model_dir=model_dir,
        port=free_port(),
        vllm_python=vllm_python,
        logs_dir=logs,
    )
    try:
        yield handle.url
    finally:
        stop_worker(handle)


@pytest.fixture(scope="session")
def generator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (…/v1) of a real vLLM CPU server running SmolLM2-135M-Instruct."""
    yield from _worker("generate", "COVRAG_TEST_GENERATOR_URL", tmp_path_factory)


@pytest.fixture(scope="session")
def embedder_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (…/v1) of a real vLLM pooling server running all-MiniLM-L6-v2."""
    yield from _worker("embed", "COVRAG_TEST_EMBEDDER_URL", tmp_path_factory)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a fresh data dir, generator pointed nowhere (tests that need it override),
    no critic: one round per query (tests/app/test_critic_api.py covers the critic)."""
    return Settings(
        store={"data_dir": tmp_path / "data"},
        generator={"urls": [f"http://127.0.0.1:{free_port()}/v1"]},
        critic={"kind": "off"},
    )


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis shared by the session (``COVRAG_TEST_REDIS_URL`` reuses a running one);
    tests keep apart by key prefix or by flushing their own database."""
    if os.environ.get("COVRAG_TEST_REDIS_URL"):
        yield os.environ["COVRAG_TEST_REDIS_URL"]
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
