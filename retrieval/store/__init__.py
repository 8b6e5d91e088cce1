"""Vector stores: one ``VectorStore`` protocol, an embedded and a server backend."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from retrieval.store.base import VectorStore
from retrieval.store.edge import EdgeStore
from retrieval.store.edge_shard import HnswParams
from retrieval.store.qdrant import QdrantStore

__all__ = ["EdgeStore", "HnswParams", "QdrantStore", "VectorStore", "make_store"]


def make_store(
    kind: Literal["edge", "qdrant"],
    *,
    data_dir: Path,
    url: str | None = None,
    location: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 10.0,
    shard_number: int | None = None,
    replication_factor: int | None = None,
    write_consistency_factor: int | None = None,
    hnsw: HnswParams | None = None,
    hnsw_ef: int | None = None,
) -> VectorStore:
    """The one place that picks a backend: Edge under ``data_dir``, or qdrant-client.
    ``hnsw``/``hnsw_ef`` tune Edge's index; a Qdrant server's are set on the server."""
    if kind == "edge":
        return EdgeStore(data_dir / "edge", hnsw=hnsw, hnsw_ef=hnsw_ef)
    return QdrantStore(
        url=url,
        location=None if url else (location or ":memory:"),
        api_key=api_key,
        timeout_s=timeout_s,
        shard_number=shard_number,
        replication_factor=replication_factor,
        write_consistency_factor=write_consistency_factor,
    )
