"""Collections and their documents; a key sees and changes only the collections it may use."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response

from app.api.collections import serving
from app.api.collections.protocol import (
    CollectionDeletedOut,
    CollectionOut,
    CollectionsOut,
    DeletedOut,
    DocumentsIn,
    DocumentsPageOut,
    IndexRequest,
)
from app.api.deps import (
    AnswersDep,
    CatalogDep,
    JobsDep,
    PrincipalDep,
    ServicesDep,
)
from app.api.jobs.protocol import ACCEPTED, JobOut
from app.api.protocol import COLLECTION_ERRORS, CollectionName

router = APIRouter(prefix="/v1/collections", tags=["collections"])
#: Most documents one page lists: a page counts each document's chunks.
MAX_PAGE = 1000


# Sync handlers on purpose where the embedded store blocks: FastAPI runs them in its thread pool
# instead of on the event loop.


@router.get("", response_model=CollectionsOut, responses=COLLECTION_ERRORS)
def list_collections(services: ServicesDep, principal: PrincipalDep) -> CollectionsOut:
    return serving.list_collections(services, principal)


@router.get("/{name}", response_model=CollectionOut, responses=COLLECTION_ERRORS)
def get_collection(
    name: CollectionName, services: ServicesDep, principal: PrincipalDep
) -> CollectionOut:
    return serving.get_collection(name, services, principal)


@router.delete("/{name}", response_model=CollectionDeletedOut, responses=COLLECTION_ERRORS)
async def delete_collection(
    name: CollectionName, catalog: CatalogDep, services: ServicesDep, principal: PrincipalDep
) -> CollectionDeletedOut:
    """Delete the collection with its documents, chunks, calibration, cached answers and
    shift watch; 409 while one of its jobs is queued or running."""
    return await serving.delete_collection(name, catalog, services, principal)


@router.get("/{name}/documents", response_model=DocumentsPageOut, responses=COLLECTION_ERRORS)
def list_documents(
    name: CollectionName,
    catalog: CatalogDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Documents per page.")] = 100,
    cursor: Annotated[UUID | None, Query(description="The previous page's `next_cursor`.")] = None,
) -> DocumentsPageOut:
    """The collection's documents with their chunk counts, a page at a time."""
    return serving.list_documents(name, catalog, principal, limit, cursor)


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
    return await serving.add_documents(name, body, response, catalog, jobs, principal)


@router.post("/{name}/index", **ACCEPTED)
async def start_index(
    name: CollectionName,
    body: IndexRequest,
    response: Response,
    services: ServicesDep,
    jobs: JobsDep,
    principal: PrincipalDep,
) -> JobOut:
    """Build the collection's HNSW index (Edge) as a background job: 202 with the job, also in
    ``Location``. Searches and writes are served meanwhile; while an index job of the
    collection is queued or running, 409."""
    return await serving.start_index(name, body, response, services, jobs, principal)


@router.delete(
    "/{name}/documents/{doc_id:path}", response_model=DeletedOut, responses=COLLECTION_ERRORS
)
async def delete_document(
    name: CollectionName,
    doc_id: str,
    services: ServicesDep,
    answers: AnswersDep,
    principal: PrincipalDep,
) -> DeletedOut:
    return await serving.delete_document(name, doc_id, services, answers, principal)
