"""Keyword vectors for hybrid search: Qdrant's own BM25.

``qdrant_edge.Bm25`` (Qdrant's tokenizer, English stemmer and stopwords, in Rust, nothing
downloaded) turns a chunk's words into a sparse vector of BM25 term-frequency weights; the
collection's sparse vector ``SPARSE`` is declared with Qdrant's IDF modifier, so the store
weighs each term by its rarity in the collection at query time. Both backends embed with this
one model, so a collection answers a keyword query alike on Edge and on a Qdrant server.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import qdrant_edge as qe

from retrieval.errors import KeywordsUnavailable, StoreUnavailable

#: The name of a collection's sparse (keyword) vector.
SPARSE = "bm25"
#: A sparse vector: term ids and their weights.
Terms = tuple[list[int], list[float]]


class Keywords:
    """BM25 sparse vectors of documents and queries (one model, shared across threads)."""

    def __init__(self) -> None:
        self._model = qe.Bm25(qe.Bm25Config())
        self._lock = threading.Lock()

    def document(self, text: str) -> Terms:
        """(term ids, BM25 weights) of a stored text; empty for a text without words."""
        with self._lock:
            sparse = self._model.embed_document(text)
        return list(sparse.indices), list(sparse.values)

    def query(self, name: str, text: str, *, has_keywords: bool) -> Terms:
        """(term ids, weights) of a keyword query on collection ``name``: each term once,
        IDF-weighted by the store; empty when the text has no word the model keeps (only
        stopwords or punctuation). Raises ``KeywordsUnavailable`` for a collection without
        keyword vectors."""
        if not has_keywords:
            raise KeywordsUnavailable(
                f"collection {name!r} was created before keyword search and has no keyword "
                "vectors: ingest its documents into a new collection to search it with "
                "search: hybrid"
            )
        with self._lock:
            sparse = self._model.embed_query(text)
        return list(sparse.indices), list(sparse.values)


def cosine(query: Sequence[float], stored: object) -> float:
    """Cosine similarity of the query to a hit's stored dense vector, the score a dense hit
    carries (stored vectors are unit length under the cosine distance; the query may not
    be). ``stored`` is the hit's vector as the backend returns it: the dense vector, or the
    named vectors with the dense one unnamed (key "")."""
    dense = stored.get("") if isinstance(stored, dict) else stored
    if not isinstance(dense, list):
        raise StoreUnavailable("a keyword hit came back without its dense vector")
    q = np.asarray(query, dtype=np.float64)
    norm = float(np.linalg.norm(q))
    return float(np.dot(q, np.asarray(dense, dtype=np.float64)) / norm) if norm else 0.0
