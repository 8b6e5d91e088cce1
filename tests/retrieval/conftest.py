"""Fixtures of the retrieval tests: every store-backed test runs against both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from retrieval.store import EdgeStore, QdrantStore, VectorStore


@pytest.fixture(params=["edge", "qdrant"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    """Qdrant Edge on a temporary folder, and qdrant-client's local mode (the server's API)."""
    s: VectorStore = (
        EdgeStore(tmp_path / "edge")
        if request.param == "edge"
        else QdrantStore(location=":memory:")
    )
    yield s
    s.close()
