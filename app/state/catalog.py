"""Collections as the routes see them, beyond one store call: an ingestion or a calibration
refused before its job, a collection's documents paged, a collection deleted with all that is
kept about it.

No HTTP here (the routes answer); the blocking methods are for a worker thread.
"""

from __future__ import annotations

import anyio

from app.state.cache import AnswerCache
from app.state.jobs import JobRegistry
from retrieval.calibration import check_calibration
from retrieval.errors import CollectionBusy, InvalidDocument
from retrieval.ingest import Ingestor
from retrieval.store.base import VectorStore
from retrieval.types import CollectionInfo, Document, DocumentPage


class Catalog:
    """The lifecycle of the collections of one store.

    Args:
        max_documents: Documents one ingestion request may carry
            (``COVRAG_MAX_DOCUMENTS_PER_REQUEST``); the ingestor holds the per-document limit.
    """

    def __init__(
        self,
        store: VectorStore,
        ingestor: Ingestor,
        jobs: JobRegistry,
        answers: AnswerCache,
        *,
        max_documents: int,
    ) -> None:
        self._store = store
        self._ingestor = ingestor
        self._jobs = jobs
        self._answers = answers
        self._max_documents = max_documents

    def check_documents(self, name: str, docs: list[Document]) -> None:
        """Refuse now what the ingestion job would refuse (``InvalidDocument``), then create
        the collection: a bad request is a 422 and no job. Blocking (it chunks every text)."""
        if len(docs) > self._max_documents:
            raise InvalidDocument(
                f"{len(docs):,} documents in one request; the limit is {self._max_documents:,} "
                "(COVRAG_MAX_DOCUMENTS_PER_REQUEST): send them in several requests",
                "documents",
            )
        self._ingestor.validate(docs)
        self._ingestor.ensure_collection(name)

    def check_calibration(
        self,
        name: str,
        questions: int,
        *,
        generated: bool,
        default_alpha: float,
        replace_smaller: bool,
    ) -> None:
        """Refuse a calibration before its job: one that cannot succeed (an empty collection,
        more generated questions than chunks) or that would break the collection (a default
        α it cannot support, a much smaller replacement without the flag). Blocking."""
        check_calibration(
            self._store,
            name,
            questions,
            default_alpha=default_alpha,
            replace_smaller=replace_smaller,
            sampled=generated,
        )

    def documents(self, name: str, *, limit: int, cursor: str | None) -> DocumentPage:
        """A page of the collection's documents with their chunk counts. Blocking."""
        return self._ingestor.documents(name, limit=limit, cursor=cursor)

    async def delete(self, name: str) -> CollectionInfo:
        """Delete the collection: its documents, chunks and calibration (all in the store) and
        its cached answers; returns what it held. ``CollectionNotFound`` if unknown,
        ``CollectionBusy`` while a job of it is queued or running (a job would recreate or
        half-fill it)."""
        info = await anyio.to_thread.run_sync(self._store.get_collection, name)
        busy = await self._jobs.unfinished(name)
        if busy:
            job = busy[0]
            raise CollectionBusy(
                f"collection {name!r} has a {job.kind} job ({job.id}) {job.status}: "
                "delete it once the job has finished"
            )
        await anyio.to_thread.run_sync(self._store.delete_collection, name)
        await self._answers.invalidate(name)
        return info
