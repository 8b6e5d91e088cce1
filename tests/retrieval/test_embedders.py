"""The three MiniLM backends agree; the remote one is the real vLLM pooling worker."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.embed import MINILM, Embedder, make_embedder
from retrieval.embed.base import MAX_TOKENS
from retrieval.embed.onnx import OnnxEmbedder
from retrieval.errors import EmbedderUnavailable
from retrieval.types import Document
from tests.conftest import free_port


@pytest.fixture(scope="module")
def reference() -> Embedder:
    return make_embedder("torch")


def _texts(wiki_sample: list[Document]) -> list[str]:
    return [f"{d.title}. {d.text}" for d in wiki_sample[:24]] + [
        "a",
        "What is the capital of Somaliland?",
    ]


def _check_agrees(got: np.ndarray, want: np.ndarray, min_cosine: float) -> None:
    assert got.shape == want.shape == (got.shape[0], MINILM.dim)
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert float((got * want).sum(axis=1).min()) >= min_cosine


def test_onnx_matches_torch(
    embedder: Embedder, reference: Embedder, wiki_sample: list[Document]
) -> None:
    texts = _texts(wiki_sample)
    # the same fp32 maths as the torch model, fused kernels aside
    _check_agrees(embedder.embed(texts), reference.embed(texts), min_cosine=0.99999)
    # order is kept although the ONNX backend batches by length
    single = embedder.embed([texts[5]])[0]
    assert float(single @ embedder.embed(texts)[5]) > 0.99999


def test_onnx_counts_tokens_as_embedded(embedder: Embedder) -> None:
    """[CLS] and [SEP] around the word pieces; a long text counts as the MAX_TOKENS it keeps."""
    assert isinstance(embedder, OnnxEmbedder)
    texts = ["a", "the Eiffel tower", "word " * 1000]  # Eiffel: e ##iff ##el
    assert embedder.count_tokens(texts) == [3, 7, MAX_TOKENS]


@pytest.mark.integration
def test_remote_vllm_matches_torch(
    embedder_url: str, reference: Embedder, wiki_sample: list[Document]
) -> None:
    remote = make_embedder("remote", url=embedder_url, batch_size=7)
    try:
        texts = _texts(wiki_sample)
        _check_agrees(remote.embed(texts), reference.embed(texts), min_cosine=0.999)
        assert remote.spec == MINILM
    finally:
        remote.close()


def test_remote_down_raises_unavailable() -> None:
    remote = make_embedder("remote", url=f"http://127.0.0.1:{free_port()}/v1", timeout_s=2)
    with pytest.raises(EmbedderUnavailable):
        remote.embed(["x"])
    assert remote.embed([]).shape == (0, MINILM.dim)
