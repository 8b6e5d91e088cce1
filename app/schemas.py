"""Wire models: every request and response body, with field constraints on the fields.

Converted to and from the core's dataclasses by the ``to_*``/``from_*`` functions here, so
routes stay one call deep.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.pipeline import QueryOutcome
from retrieval.ingest import IngestReport
from retrieval.types import CollectionInfo, Document


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- query ------------------------------------------------------------------------------
class QueryRequest(_Strict):
    """``POST /v1/query``."""

    question: str = Field(description="The question; 1 to COVRAG_MAX_QUESTION_CHARS characters.")
    collection: str | None = Field(
        None, description="Collection to search; default COVRAG_DEFAULT_COLLECTION."
    )
    top_k: int | None = Field(
        None, ge=1, le=100, description="Passages to retrieve; default COVRAG_DEFAULT_TOP_K."
    )
    filters: dict[str, str | int | bool] = Field(
        default_factory=dict, description='Exact payload matches, e.g. {"doc_id": "Paris"}.'
    )
    alpha: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Conformal miss rate; accepted, applied once the conformal filter lands.",
    )
    max_rounds: int | None = Field(
        None, ge=1, le=5, description="Retrieval rounds; accepted, applied once the critic lands."
    )
    stream: bool = Field(
        False, description="Server-sent events; accepted, applied once streaming lands."
    )


class CitationOut(BaseModel):
    """A passage given to the generator, numbered as in the prompt."""

    n: int = Field(description="The passage's number in the prompt; the answer cites it as [n].")
    cited: bool = Field(description="Whether the answer cites [n].")
    chunk_id: str
    doc_id: str
    title: str
    text: str
    score: float = Field(description="Cosine similarity to the question.")


class TimingsOut(BaseModel):
    embed: float
    search: float
    generate: float
    total: float


class QueryResponse(BaseModel):
    """``POST /v1/query`` answer."""

    answer: str
    sufficient: bool = Field(description="Passages were found and the model did not refuse.")
    citations: list[CitationOut]
    alpha: float | None
    threshold: float | None
    coverage_guaranteed: bool
    rounds: list[dict[str, Any]]
    timings_ms: TimingsOut
    model: str
    request_id: str


def to_query_response(outcome: QueryOutcome, request_id: str) -> QueryResponse:
    return QueryResponse(
        answer=outcome.answer,
        sufficient=outcome.sufficient,
        citations=[
            CitationOut(
                n=c.n,
                cited=c.cited,
                chunk_id=c.chunk.id,
                doc_id=c.chunk.doc_id,
                title=c.chunk.title,
                text=c.chunk.text,
                score=c.chunk.score,
            )
            for c in outcome.citations
        ],
        alpha=outcome.alpha,
        threshold=outcome.threshold,
        coverage_guaranteed=outcome.coverage_guaranteed,
        rounds=[],
        timings_ms=TimingsOut(**outcome.timings_ms),
        model=outcome.model,
        request_id=request_id,
    )


# --- documents and collections ----------------------------------------------------------
class DocumentIn(_Strict):
    id: str = Field(min_length=1, max_length=512, description="Stable document key.")
    text: str = Field(description="Document text; must not be blank.")
    title: str | None = Field(None, max_length=1024)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsIn(_Strict):
    """``POST /v1/collections/{name}/documents``."""

    documents: list[DocumentIn] = Field(min_length=1)


def to_documents(body: DocumentsIn) -> list[Document]:
    return [
        Document(id=d.id, text=d.text, title=d.title, source="api", metadata=d.metadata)
        for d in body.documents
    ]


class IngestOut(BaseModel):
    collection: str
    documents: int
    added: int
    updated: int
    unchanged: int
    chunks_written: int


def to_ingest_out(collection: str, report: IngestReport) -> IngestOut:
    return IngestOut(
        collection=collection,
        documents=report.documents,
        added=report.added,
        updated=report.updated,
        unchanged=report.unchanged,
        chunks_written=report.chunks_written,
    )


class DeletedOut(BaseModel):
    collection: str
    doc_id: str
    chunks_deleted: int


class EmbedderOut(BaseModel):
    model: str
    dim: int


class CollectionOut(BaseModel):
    name: str
    documents: int
    chunks: int
    embedder: EmbedderOut
    created_at: datetime


def to_collection_out(info: CollectionInfo) -> CollectionOut:
    return CollectionOut(
        name=info.name,
        documents=info.documents,
        chunks=info.chunks,
        embedder=EmbedderOut(model=info.embedder.model, dim=info.embedder.dim),
        created_at=info.created_at,
    )


class CollectionsOut(BaseModel):
    collections: list[CollectionOut]


# --- health and errors ------------------------------------------------------------------
class ReadyOut(BaseModel):
    status: str = Field(description="ready or unavailable")
    checks: dict[str, str] = Field(description="Per dependency: ok, or what failed.")


class ErrorBody(BaseModel):
    type: str
    message: str
    param: str | None = None


class ErrorOut(BaseModel):
    """The one error envelope of every non-2xx response."""

    error: ErrorBody
    request_id: str | None = None
