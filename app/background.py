"""What each background job kind does, on domain values: ``ingest``, ``calibration`` and
``index``. Each family's serving module (``app.api.<family>.serving``) reads a job's stored
request into these arguments, so a job can resume in another process, and turns the result
into its wire model. A job that changed a collection bumps its answer-cache version, so no
answer computed before the change is served after it (an index build changes how the
collection is searched, not what it holds)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio

from app.config import Settings
from app.core.calibration import generated_job, qa_job
from app.services import Services
from app.state.cache import AnswerCache
from app.state.jobs import UNFINISHED, Job, JobRegistry
from retrieval.calibration_set import CalibrationItem
from retrieval.ingest import IngestReport
from retrieval.store.base import IndexReport, index_due
from retrieval.types import Document


@dataclass(frozen=True, slots=True)
class CalibrationTask:
    """A calibration job's request: its QA pairs, or (``items`` None) ``generate`` questions
    written from that many sampled chunks."""

    items: list[CalibrationItem] | None
    generate: int
    seed: int
    default_alpha: float
    replace_smaller: bool


async def index_job_under_way(jobs: JobRegistry, collection: str) -> Job | None:
    """The queued or running index job of ``collection``, if any: a second would only fail,
    the store building one index per collection at a time."""
    job = await jobs.latest("index", collection)
    return job if job is not None and job.status in UNFINISHED else None


class JobWork:
    """The job kinds' work; ``jobs`` (the registry that runs them) receives the index jobs
    that ingestion starts."""

    def __init__(
        self, services: Services, answers: AnswerCache, settings: Settings, jobs: JobRegistry
    ) -> None:
        self._services = services
        self._answers = answers
        self._settings = settings
        self._jobs = jobs

    async def ingest(self, job: Job, docs: list[Document]) -> IngestReport:
        def advance(done: int, total: int) -> None:  # chunks: one large document moves it too
            job.progress = round(done / total, 3)

        ingestor = self._services.ingestor
        try:
            report = await anyio.to_thread.run_sync(
                lambda: ingestor.ingest(job.collection, docs, progress=advance)
            )
        finally:  # even a half-done batch changed the collection
            await self._answers.invalidate(job.collection)
        await self._index_when_due(job, report.chunks_written)
        return report

    async def _index_when_due(self, job: Job, chunks_written: int) -> None:
        """After an ingestion into an Edge collection: start an index job when ``index_due``
        says so (``COVRAG_INDEX_THRESHOLD``, ``COVRAG_REINDEX_FRACTION``), unless one is under
        way."""
        settings = self._settings
        if settings.store.kind != "edge":
            return
        store = self._services.store
        info = await anyio.to_thread.run_sync(store.get_collection, job.collection)
        due = index_due(
            info,
            chunks_written,
            threshold=settings.store.index_threshold,
            reindex_fraction=settings.store.reindex_fraction,
        )
        if not due:
            return
        if await index_job_under_way(self._jobs, job.collection) is not None:
            return
        started = await self._jobs.submit("index", job.collection, {})  # no time limit
        job.messages.append(f"index job {started.id} started ({info.chunks} chunks)")

    async def calibrate(self, job: Job, task: CalibrationTask) -> dict[str, Any]:
        services = self._services
        if task.items is not None:
            body = qa_job(
                services.store,
                services.embedder,
                job.collection,
                task.items,
                default_alpha=task.default_alpha,
                replace_smaller=task.replace_smaller,
                rerank=services.retriever.reranking,
            )
        else:
            body = generated_job(
                services.store,
                services.embedder,
                services.generator,
                job.collection,
                task.generate,
                seed=task.seed,
                default_alpha=task.default_alpha,
                replace_smaller=task.replace_smaller,
                rerank=services.retriever.reranking,
            )
        result = await body(job)
        await self._answers.invalidate(job.collection)
        return result

    async def index(self, job: Job, timeout_s: float | None) -> IndexReport:
        store = self._services.store
        # Abandoned on cancel: at shutdown the store's close() stops the build, and the job,
        # left unfinished, resumes on the next start.
        return await anyio.to_thread.run_sync(
            lambda: store.build_index(job.collection, timeout_s=timeout_s),
            abandon_on_cancel=True,
        )
