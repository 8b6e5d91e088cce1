"""Collections and their documents: the handlers behind the routes, and the ``ingest`` and
``index`` jobs' runners (a stored request read into ``app.background``'s domain work).

A key sees and changes only the collections it may use. The handlers the routes run in the
thread pool are sync: the embedded store blocks.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any
from uuid import UUID

import anyio
from fastapi import Response

from app.api.collections.protocol import (
    CollectionDeletedOut,
    CollectionOut,
    CollectionsOut,
    DeletedOut,
    DocumentsIn,
    DocumentsPageOut,
    IndexRequest,
    to_collection_out,
    to_documents,
    to_documents_page,
    to_ingest_out,
)
from app.api.jobs.protocol import JobOut
from app.api.jobs.serving import accept
from app.background import JobWork, index_job_under_way
from app.services import Services
from app.state.auth import Principal
from app.state.cache import AnswerCache
from app.state.catalog import Catalog
from app.state.jobs import Job, JobRegistry
from retrieval.errors import IndexBuildRunning


def list_collections(services: Services, principal: Principal) -> CollectionsOut:
    return CollectionsOut(
        collections=[
            to_collection_out(c)
            for c in services.store.list_collections()
            if principal.allows(c.name)
        ]
    )


def get_collection(name: str, services: Services, principal: Principal) -> CollectionOut:
    principal.check(name, "name")
    return to_collection_out(services.store.get_collection(name))


async def delete_collection(
    name: str, catalog: Catalog, services: Services, principal: Principal
) -> CollectionDeletedOut:
    principal.check(name, "name")
    info = await catalog.delete(name)
    services.drift.forget(name)  # a new collection of that name starts at version 1 again
    return CollectionDeletedOut(
        collection=name, documents_deleted=info.documents, chunks_deleted=info.chunks
    )


def list_documents(
    name: str, catalog: Catalog, principal: Principal, limit: int, cursor: UUID | None
) -> DocumentsPageOut:
    principal.check(name, "name")
    page = catalog.documents(name, limit=limit, cursor=None if cursor is None else str(cursor))
    return to_documents_page(name, page)


async def add_documents(
    name: str,
    body: DocumentsIn,
    response: Response,
    catalog: Catalog,
    jobs: JobRegistry,
    principal: Principal,
) -> JobOut:
    principal.check(name, "name")
    # Chunking a large body is CPU work: off the event loop.
    await anyio.to_thread.run_sync(catalog.check_documents, name, to_documents(body))
    return await accept(jobs, response, "ingest", name, body.model_dump(mode="json"))


async def start_index(
    name: str,
    body: IndexRequest,
    response: Response,
    services: Services,
    jobs: JobRegistry,
    principal: Principal,
) -> JobOut:
    principal.check(name, "name")
    await anyio.to_thread.run_sync(services.store.get_collection, name)  # a 404, not a job
    running = await index_job_under_way(jobs, name)
    if running is not None:
        raise IndexBuildRunning(f"index job {running.id} of {name!r} is {running.status}")
    return await accept(jobs, response, "index", name, body.model_dump(mode="json"))


async def delete_document(
    name: str, doc_id: str, services: Services, answers: AnswerCache, principal: Principal
) -> DeletedOut:
    principal.check(name, "name")
    deleted = await anyio.to_thread.run_sync(services.ingestor.delete, name, doc_id)
    await answers.invalidate(name)
    return DeletedOut(collection=name, doc_id=doc_id, chunks_deleted=deleted)


async def run_ingest(work: JobWork, job: Job) -> dict[str, Any]:
    report = await work.ingest(job, to_documents(DocumentsIn.model_validate(job.request)))
    return to_ingest_out(job.collection, report).model_dump()


async def run_index(work: JobWork, job: Job) -> dict[str, Any]:
    request = IndexRequest.model_validate(job.request)
    return asdict(await work.index(job, request.timeout_s))
