"""The ``Embedder`` protocol and what every backend shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from retrieval.types import EmbedderSpec

#: The model every backend here serves; its three forms (fp32 torch, int8 ONNX, vLLM pooling)
#: agree to cosine >= 0.999, so they may share a collection.
MINILM = EmbedderSpec(model="all-MiniLM-L6-v2", dim=384)

Matrix = npt.NDArray[np.float32]

#: Tokens MiniLM reads (sentence-transformers' max_seq_length); longer texts are truncated.
MAX_TOKENS = 256


class Embedder(Protocol):
    """Texts to L2-normalised float32 rows, so the store's cosine equals a dot product.

    ``spec`` names the model and dimension a collection records; a collection refuses queries
    from an embedder with another spec.
    """

    spec: EmbedderSpec

    def embed(self, texts: Sequence[str]) -> Matrix:
        """One row per text, in order. Raises ``EmbedderUnavailable`` if a remote call fails."""
        ...

    def close(self) -> None: ...


def normalize(rows: npt.NDArray[np.floating]) -> Matrix:
    """L2-normalise each row (zero rows stay zero)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: npt.NDArray[np.floating] = rows / np.maximum(norms, 1e-12)
    return unit.astype(np.float32)
