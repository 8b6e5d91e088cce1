"""``RemoteEmbedder``: the OpenAI-compatible ``/v1/embeddings`` of a vLLM pooling worker.

Synchronous on purpose: the pipeline runs embedding and search together in a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import numpy as np

from retrieval.embed.base import MAX_TOKENS, MINILM, Matrix, normalize
from retrieval.errors import EmbedderUnavailable
from retrieval.types import EmbedderSpec


class RemoteEmbedder:
    """Batches texts to the worker; transport errors become ``EmbedderUnavailable`` (503)."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str = MINILM.model,
        spec: EmbedderSpec = MINILM,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        batch_size: int = 64,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s
        )
        self._model = model
        self.spec = spec
        self._batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        rows: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            try:
                # vLLM refuses (400) inputs over the model length; truncate like the local ones
                response = self._client.post(
                    "/embeddings",
                    json={
                        "model": self._model,
                        "input": batch,
                        "truncate_prompt_tokens": MAX_TOKENS,
                    },
                )
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise EmbedderUnavailable(f"embedding worker failed: {exc}") from exc
            data = sorted(response.json()["data"], key=lambda d: d["index"])
            rows.extend(d["embedding"] for d in data)
        matrix = normalize(np.asarray(rows, dtype=np.float32))
        if matrix.shape[1] != self.spec.dim:
            raise EmbedderUnavailable(
                f"embedding worker returned {matrix.shape[1]}-d vectors, expected {self.spec.dim}"
            )
        return matrix

    def close(self) -> None:
        self._client.close()
