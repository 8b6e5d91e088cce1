"""Embedders: one ``Embedder`` protocol; ONNX (default), torch and remote backends."""

from __future__ import annotations

from typing import Literal

from retrieval.embed.base import MINILM, Embedder

__all__ = ["MINILM", "Embedder", "make_embedder"]


def make_embedder(
    kind: Literal["onnx", "torch", "remote"],
    *,
    url: str = "",
    model: str = MINILM.model,
    threads: int = 2,
    batch_size: int = 8,
    timeout_s: float = 30.0,
    retries: int = 2,
) -> Embedder:
    """The one place that picks an embedder backend; heavy imports happen only for the one used."""
    if kind == "onnx":
        from retrieval.embed.onnx import OnnxEmbedder

        return OnnxEmbedder(threads=threads, batch_size=batch_size)
    if kind == "torch":
        from retrieval.embed.torch import TorchEmbedder

        return TorchEmbedder(threads=threads, batch_size=batch_size)
    from retrieval.embed.remote import RemoteEmbedder

    return RemoteEmbedder(
        url, model=model, timeout_s=timeout_s, batch_size=batch_size, retries=retries
    )
