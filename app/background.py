"""What each background job kind does, rebuilt from its stored request (so a job can resume
in another process): ``ingest``, ``files`` (uploads), ``calibration`` and ``index``. A job
that changed a collection bumps its answer-cache version, so no answer computed before the
change is served after it (an index build changes how the collection is searched, not what it
holds)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import anyio

from app.config import Settings
from app.core.calibration import generated_job, qa_job
from app.core.pipeline import Pipeline
from app.schemas import (
    CalibrationRequest,
    DocumentsIn,
    IndexRequest,
    IngestOut,
    to_documents,
    to_ingest_out,
    to_items,
)
from app.state.cache import AnswerCache
from app.state.jobs import UNFINISHED, Job, JobBody, JobRegistry
from app.uploads import (
    UploadsIn,
    file_error,
    none_read,
    read_uploads,
    to_files_ingest_out,
)
from retrieval.ingest import Ingestor
from retrieval.store.base import index_due
from retrieval.types import Document


async def index_job_under_way(jobs: JobRegistry, collection: str) -> Job | None:
    """The queued or running index job of ``collection``, if any: a second would only fail,
    the store building one index per collection at a time."""
    job = await jobs.latest("index", collection)
    return job if job is not None and job.status in UNFINISHED else None


def job_runners(
    pipeline: Pipeline,
    ingestor: Ingestor,
    answers: AnswerCache,
    settings: Settings,
    jobs: JobRegistry,
) -> dict[str, JobBody]:
    """The runners; ``jobs`` (the registry that runs them) receives the index jobs that
    ingestion starts."""

    async def index_when_due(job: Job, chunks_written: int) -> None:
        """After an ingestion into an Edge collection: start an index job when ``index_due``
        says so (``COVRAG_INDEX_THRESHOLD``, ``COVRAG_REINDEX_FRACTION``), unless one is under
        way."""
        if settings.store != "edge":
            return
        info = await anyio.to_thread.run_sync(pipeline.store.get_collection, job.collection)
        due = index_due(
            info,
            chunks_written,
            threshold=settings.index_threshold,
            reindex_fraction=settings.reindex_fraction,
        )
        if not due:
            return
        if await index_job_under_way(jobs, job.collection) is not None:
            return
        started = await jobs.submit("index", job.collection, IndexRequest().model_dump())
        job.messages.append(f"index job {started.id} started ({info.chunks} chunks)")

    async def write(job: Job, docs: list[Document]) -> IngestOut:
        def advance(done: int, total: int) -> None:  # chunks: one large document moves it too
            job.progress = round(done / total, 3)

        try:
            report = await anyio.to_thread.run_sync(
                lambda: ingestor.ingest(job.collection, docs, progress=advance)
            )
        finally:  # even a half-done batch changed the collection
            await answers.invalidate(job.collection)
        await index_when_due(job, report.chunks_written)
        return to_ingest_out(job.collection, report)

    async def ingest(job: Job) -> dict[str, Any]:
        docs = to_documents(DocumentsIn.model_validate(job.request))
        return (await write(job, docs)).model_dump()

    async def ingest_files(job: Job) -> dict[str, Any]:
        """Parse the uploaded files, then ingest those that were read; each file that was not
        (refused up front, or here) is a message, and the job fails only when none was read."""
        request = UploadsIn.model_validate(job.request)
        docs, failed = await anyio.to_thread.run_sync(
            lambda: read_uploads(
                request,
                max_bytes=settings.max_file_bytes,
                max_chars=settings.max_document_chars,
            )
        )
        failures = [*request.refused, *map(file_error, failed)]
        job.messages.extend(f.error for f in failures)
        if not docs:
            raise none_read(failed)
        return to_files_ingest_out(await write(job, docs), failures).model_dump()

    async def calibrate(job: Job) -> dict[str, Any]:
        request = CalibrationRequest.model_validate(job.request)
        alpha = request.default_alpha or settings.default_alpha
        if request.qa is not None:
            body = qa_job(
                pipeline.store,
                pipeline.embedder,
                job.collection,
                to_items(request.qa),
                default_alpha=alpha,
                replace_smaller=request.replace_smaller,
            )
        else:
            assert request.generate is not None  # the request model guarantees one of the two
            body = generated_job(
                pipeline.store,
                pipeline.embedder,
                pipeline.generator,
                job.collection,
                request.generate,
                seed=request.seed,
                default_alpha=alpha,
                replace_smaller=request.replace_smaller,
            )
        result = await body(job)
        await answers.invalidate(job.collection)
        return result

    async def index(job: Job) -> dict[str, Any]:
        request = IndexRequest.model_validate(job.request)
        # Abandoned on cancel: at shutdown the store's close() stops the build, and the job,
        # left unfinished, resumes on the next start.
        report = await anyio.to_thread.run_sync(
            lambda: pipeline.store.build_index(job.collection, timeout_s=request.timeout_s),
            abandon_on_cancel=True,
        )
        return asdict(report)

    return {"ingest": ingest, "files": ingest_files, "calibration": calibrate, "index": index}
