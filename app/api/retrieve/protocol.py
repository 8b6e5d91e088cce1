"""``POST /v1/retrieve`` wire models: it takes ``/v1/query``'s request and answers the
conformal filter's report alone."""

from __future__ import annotations

from pydantic import Field

from app.api.protocol import RetrievalFields, retrieval_fields
from app.core.types import Citation
from retrieval.types import Retrieval


class RetrieveResponse(RetrievalFields):
    """``POST /v1/retrieve``: the filtered passages, no generation."""

    warnings: list[str] = Field(
        description="What the caller should know, e.g. that the shift watch flagged drift."
    )


def to_retrieve_response(retrieval: Retrieval, request_id: str) -> RetrieveResponse:
    citations = [Citation(n=i, chunk=h, cited=False) for i, h in enumerate(retrieval.hits, 1)]
    return RetrieveResponse(
        **retrieval_fields(retrieval, citations, retrieval.timings_ms, request_id),
        warnings=list(retrieval.warnings),
    )
