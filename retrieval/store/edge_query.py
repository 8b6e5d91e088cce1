"""Qdrant Edge's requests from the store's terms: payload filters, and a point's named vectors
(the dense one unnamed, the keyword one ``SPARSE``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import qdrant_edge as qe

from retrieval.store.keywords import SPARSE, Keywords, Terms
from retrieval.types import FilterScalar, FilterValue, Point

if TYPE_CHECKING:
    from qdrant_edge import ConditionType

#: A point's vectors as the binding types them (multivectors too), which it checks invariantly.
NamedVectors = dict[str, list[float] | qe.SparseVector | list[list[float]]]


def _match(key: str, value: FilterScalar) -> qe.FieldCondition:
    if isinstance(value, bool):
        # The binding reads a Python bool as the integer it also is, which no boolean payload
        # equals; numpy's bool is no int and arrives as a boolean. The stub names Python's bool.
        exact = qe.MatchValue(np.bool_(value))  # type: ignore[arg-type]
        return qe.FieldCondition(key=key, match=exact)
    return qe.FieldCondition(key=key, match=qe.MatchValue(value))


def _condition(key: str, value: FilterValue) -> ConditionType:
    """One filter item; a list becomes a ``should`` of exact matches (``MatchAny`` takes
    neither booleans nor mixed types)."""
    if isinstance(value, list):
        return qe.Filter(should=[_match(key, v) for v in value])
    return _match(key, value)


def edge_filter(
    filters: Mapping[str, FilterValue] | None, min_chunk_index: int = 0
) -> qe.Filter | None:
    must = [_condition(key, value) for key, value in (filters or {}).items()]
    if min_chunk_index > 0:
        must.append(qe.FieldCondition(key="chunk_index", range=qe.RangeFloat(gte=min_chunk_index)))
    return qe.Filter(must=must) if must else None


def sparse(terms: Terms) -> qe.SparseVector:
    return qe.SparseVector(indices=terms[0], values=terms[1])


def named_vectors(point: Point, keywords: Keywords) -> NamedVectors:
    """The dense vector, and the keyword vector unless the text has no word the model keeps:
    stored only where it has terms, the keyword vectors can be counted exactly."""
    terms = keywords.document(point.text)
    vectors: NamedVectors = {"": point.vector}
    if terms[0]:
        vectors[SPARSE] = sparse(terms)
    return vectors


#: Counts the points that have a keyword vector.
WITH_KEYWORDS = qe.CountRequest(filter=qe.Filter(must=[qe.HasVectorCondition(SPARSE)]))


def keyword_request(
    terms: Terms, limit: int, filters: Mapping[str, FilterValue] | None
) -> qe.QueryRequest:
    """The ``limit`` best BM25 matches of ``terms``, with their dense vectors (a keyword hit is
    scored by its cosine similarity, as a dense one)."""
    return qe.QueryRequest(
        limit=limit,
        query=qe.Query.Nearest(sparse(terms), using=SPARSE),
        filter=edge_filter(filters),
        with_payload=True,
        with_vector=True,
    )
