"""``RemoteEmbedder``: the OpenAI-compatible ``/v1/embeddings`` of a vLLM pooling worker.

Synchronous on purpose: the pipeline runs embedding and search together in a worker thread.
Embedding is idempotent, so a refused connection, a reset or a 5xx is retried with jittered
exponential backoff: a worker restarting costs a moment's wait, not a 503.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from retrieval.embed.base import MAX_TOKENS, MINILM, Matrix, normalize
from retrieval.errors import EmbedderUnavailable
from retrieval.types import EmbedderSpec

#: Worth retrying: the worker is not there (yet) or broke. A read timeout is not: it would
#: only wait the full timeout again.
_RETRY = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError)
_BACKOFF_S = 0.2


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
        retries: int = 2,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s
        )
        self._model = model
        self.spec = spec
        self._batch_size = batch_size
        self._retries = retries

    def embed(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        rows: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            data = sorted(self._post(batch)["data"], key=lambda d: d["index"])
            rows.extend(d["embedding"] for d in data)
        matrix = normalize(np.asarray(rows, dtype=np.float32))
        if matrix.shape[1] != self.spec.dim:
            raise EmbedderUnavailable(
                f"embedding worker returned {matrix.shape[1]}-d vectors, expected {self.spec.dim}"
            )
        return matrix

    def _post(self, batch: list[str]) -> dict[str, Any]:
        """One batch's reply; a refusal, reset or 5xx is retried, anything else and the last
        failure become ``EmbedderUnavailable``."""
        attempt = 0
        while True:
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
                result: dict[str, Any] = response.json()
                return result
            except httpx.HTTPError as exc:
                transient = isinstance(exc, _RETRY) or (
                    isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500
                )
                if not transient or attempt >= self._retries:
                    raise EmbedderUnavailable(f"embedding worker failed: {exc}") from exc
            time.sleep(_BACKOFF_S * 2**attempt * random.uniform(0.5, 1.0))
            attempt += 1

    def close(self) -> None:
        self._client.close()
