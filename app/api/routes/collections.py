"""Collections and their documents."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import IngestorDep, PipelineDep
from app.schemas import (
    CollectionOut,
    CollectionsOut,
    DeletedOut,
    DocumentsIn,
    ErrorOut,
    IngestOut,
    to_collection_out,
    to_documents,
    to_ingest_out,
)

router = APIRouter(prefix="/v1/collections", tags=["collections"])

_ERRORS = {code: {"model": ErrorOut} for code in (400, 404, 409, 422, 503)}

# Sync handlers on purpose: embedding and the embedded store block, so FastAPI runs these in
# its thread pool instead of on the event loop.


@router.get("", response_model=CollectionsOut, responses=_ERRORS)  # type: ignore[arg-type]
def list_collections(pipeline: PipelineDep) -> CollectionsOut:
    return CollectionsOut(
        collections=[to_collection_out(c) for c in pipeline.store.list_collections()]
    )


@router.get("/{name}", response_model=CollectionOut, responses=_ERRORS)  # type: ignore[arg-type]
def get_collection(name: str, pipeline: PipelineDep) -> CollectionOut:
    return to_collection_out(pipeline.store.get_collection(name))


@router.post("/{name}/documents", response_model=IngestOut, responses=_ERRORS)  # type: ignore[arg-type]
def add_documents(name: str, body: DocumentsIn, ingestor: IngestorDep) -> IngestOut:
    """Add or replace documents (created on first use); unchanged ones are skipped."""
    return to_ingest_out(name, ingestor.ingest(name, to_documents(body)))


@router.delete("/{name}/documents/{doc_id:path}", response_model=DeletedOut, responses=_ERRORS)  # type: ignore[arg-type]
def delete_document(name: str, doc_id: str, ingestor: IngestorDep) -> DeletedOut:
    return DeletedOut(collection=name, doc_id=doc_id, chunks_deleted=ingestor.delete(name, doc_id))
