"""Collections and their documents; a key sees and changes only the collections it may use."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import anyio
from fastapi import APIRouter, Query, Response

from app.api.deps import (
    AnswersDep,
    CatalogDep,
    IngestorDep,
    JobsDep,
    PipelineDep,
    PrincipalDep,
)
from app.api.routes.jobs import ACCEPTED, COLLECTION_ERRORS, accept
from app.background import index_job_under_way
from app.schemas import (
    CollectionDeletedOut,
    CollectionName,
    CollectionOut,
    CollectionsOut,
    DeletedOut,
    DocumentsIn,
    DocumentsPageOut,
    IndexRequest,
    JobOut,
    to_collection_out,
    to_documents,
    to_documents_page,
)
from retrieval.errors import IndexBuildRunning

router = APIRouter(prefix="/v1/collections", tags=["collections"])
#: Most documents one page lists: a page counts each document's chunks.
MAX_PAGE = 1000


# Sync handlers on purpose where the embedded store blocks: FastAPI runs them in its thread pool
# instead of on the event loop.


@router.get("", response_model=CollectionsOut, responses=COLLECTION_ERRORS)
def list_collections(pipeline: PipelineDep, principal: PrincipalDep) -> CollectionsOut:
    return CollectionsOut(
        collections=[
            to_collection_out(c)
            for c in pipeline.store.list_collections()
            if principal.allows(c.name)
        ]
    )


@router.get("/{name}", response_model=CollectionOut, responses=COLLECTION_ERRORS)
def get_collection(
    name: CollectionName, pipeline: PipelineDep, principal: PrincipalDep
) -> CollectionOut:
    principal.check(name, "name")
    return to_collection_out(pipeline.store.get_collection(name))


@router.delete("/{name}", response_model=CollectionDeletedOut, responses=COLLECTION_ERRORS)
async def delete_collection(
    name: CollectionName, catalog: CatalogDep, pipeline: PipelineDep, principal: PrincipalDep
) -> CollectionDeletedOut:
    """Delete the collection with its documents, chunks, calibration, cached answers and
    shift watch; 409 while one of its jobs is queued or running."""
    principal.check(name, "name")
    info = await catalog.delete(name)
    if pipeline.drift is not None:  # a new collection of that name starts at version 1 again
        pipeline.drift.forget(name)
    return CollectionDeletedOut(
        collection=name, documents_deleted=info.documents, chunks_deleted=info.chunks
    )


@router.get("/{name}/documents", response_model=DocumentsPageOut, responses=COLLECTION_ERRORS)
def list_documents(
    name: CollectionName,
    catalog: CatalogDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Documents per page.")] = 100,
    cursor: Annotated[UUID | None, Query(description="The previous page's `next_cursor`.")] = None,
) -> DocumentsPageOut:
    """The collection's documents with their chunk counts, a page at a time."""
    principal.check(name, "name")
    page = catalog.documents(name, limit=limit, cursor=None if cursor is None else str(cursor))
    return to_documents_page(name, page)


@router.post("/{name}/documents", **ACCEPTED)
async def add_documents(
    name: CollectionName,
    body: DocumentsIn,
    response: Response,
    catalog: CatalogDep,
    jobs: JobsDep,
    principal: PrincipalDep,
) -> JobOut:
    """Add or replace documents (the collection is created on first use; unchanged documents
    are skipped) as a background job: 202 with the job, also in ``Location``.

    The documents are checked before anything is written: a bad one, too many or too long
    ones are a 422 naming the document and the limit, and no job.
    """
    principal.check(name, "name")
    # Chunking a large body is CPU work: off the event loop.
    await anyio.to_thread.run_sync(catalog.check_documents, name, to_documents(body))
    return await accept(jobs, response, "ingest", name, body.model_dump(mode="json"))


@router.post("/{name}/index", **ACCEPTED)
async def start_index(
    name: CollectionName,
    body: IndexRequest,
    response: Response,
    pipeline: PipelineDep,
    jobs: JobsDep,
    principal: PrincipalDep,
) -> JobOut:
    """Build the collection's HNSW index (Edge) as a background job: 202 with the job, also in
    ``Location``. Searches and writes are served meanwhile; while an index job of the
    collection is queued or running, 409."""
    principal.check(name, "name")
    await anyio.to_thread.run_sync(pipeline.store.get_collection, name)  # a 404, not a job
    running = await index_job_under_way(jobs, name)
    if running is not None:
        raise IndexBuildRunning(f"index job {running.id} of {name!r} is {running.status}")
    return await accept(jobs, response, "index", name, body.model_dump(mode="json"))


@router.delete(
    "/{name}/documents/{doc_id:path}", response_model=DeletedOut, responses=COLLECTION_ERRORS
)
async def delete_document(
    name: CollectionName,
    doc_id: str,
    ingestor: IngestorDep,
    answers: AnswersDep,
    principal: PrincipalDep,
) -> DeletedOut:
    principal.check(name, "name")
    deleted = await anyio.to_thread.run_sync(ingestor.delete, name, doc_id)
    await answers.invalidate(name)
    return DeletedOut(collection=name, doc_id=doc_id, chunks_deleted=deleted)
