"""Collections and documents wire models: the documents a client sends, and what a
collection holds."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from app.api.protocol import NotBlank, Strict
from retrieval.ingest import IngestReport
from retrieval.types import CollectionInfo, Document, DocumentPage


class DocumentIn(Strict):
    id: NotBlank = Field(max_length=512, description="Stable document key.")
    text: NotBlank = Field(description="Document text; must not be blank.")
    title: str | None = Field(None, max_length=1024)
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: str | None = Field(
        None, max_length=1024, description='Where the text came from (citations); "api" if unset.'
    )
    page_starts: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        max_length=100_000,
        description="Offsets in `text` at which pages 1, 2, … begin (from 0, in order): chunks "
        "then keep within a page and citations carry its number.",
    )


class DocumentsIn(Strict):
    """``POST /v1/collections/{name}/documents``."""

    documents: list[DocumentIn] = Field(
        min_length=1,
        description="Ids unique within a request; at most COVRAG_MAX_DOCUMENTS_PER_REQUEST "
        "documents, each of at most COVRAG_MAX_DOCUMENT_CHARS characters.",
    )


def to_documents(body: DocumentsIn) -> list[Document]:
    return [
        Document(
            id=d.id,
            text=d.text,
            title=d.title,
            source=d.source or "api",
            metadata=d.metadata,
            page_starts=tuple(d.page_starts or ()),
        )
        for d in body.documents
    ]


def to_documents_in(docs: list[Document]) -> DocumentsIn:
    """The inverse of ``to_documents``: files read by the CLI, sent to a server."""
    return DocumentsIn(
        documents=[
            DocumentIn(
                id=d.id,
                text=d.text,
                title=d.title,
                metadata=d.metadata,
                source=d.source,
                page_starts=list(d.page_starts) or None,
            )
            for d in docs
        ]
    )


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


class DocumentOut(BaseModel):
    id: str
    title: str
    chunks: int = Field(description="Chunks the document was cut into.")


class DocumentsPageOut(BaseModel):
    """``GET /v1/collections/{name}/documents``: one page, in a stable (chunk-id) order."""

    collection: str
    documents: list[DocumentOut]
    total: int = Field(description="Documents in the collection.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null after the last page."
    )


def to_documents_page(collection: str, page: DocumentPage) -> DocumentsPageOut:
    return DocumentsPageOut(
        collection=collection,
        documents=[DocumentOut(id=d.id, title=d.title, chunks=d.chunks) for d in page.documents],
        total=page.total,
        next_cursor=page.cursor,
    )


class CollectionDeletedOut(BaseModel):
    """``DELETE /v1/collections/{name}``: what the collection held."""

    collection: str
    documents_deleted: int
    chunks_deleted: int


class EmbedderOut(BaseModel):
    model: str
    dim: int


class CollectionOut(BaseModel):
    name: str
    documents: int
    chunks: int
    indexed: int = Field(
        description="Chunks in an HNSW index (the rest are searched by brute force), at most "
        "`chunks`; chunks deleted or rewritten since the last build may still count until the "
        "next one."
    )
    embedder: EmbedderOut
    created_at: datetime


def to_collection_out(info: CollectionInfo) -> CollectionOut:
    return CollectionOut(
        name=info.name,
        documents=info.documents,
        chunks=info.chunks,
        indexed=info.indexed,
        embedder=EmbedderOut(model=info.embedder.model, dim=info.embedder.dim),
        created_at=info.created_at,
    )


class CollectionsOut(BaseModel):
    collections: list[CollectionOut]


class IndexRequest(Strict):
    """``POST /v1/collections/{name}/index``; ``{}`` builds with no time limit."""

    timeout_s: float | None = Field(
        None, gt=0, description="Stop the build after this long; the collection stays as it was."
    )
