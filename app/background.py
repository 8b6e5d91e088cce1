"""What each background job kind does, rebuilt from its stored request (so a job can resume
in another process): ``ingest`` and ``calibration``. A job that changed a collection bumps its
answer-cache version, so no answer computed before the change is served after it."""

from __future__ import annotations

from typing import Any

import anyio

from app.cache import AnswerCache
from app.calibration import generated_job, qa_job
from app.config import Settings
from app.jobs import Job, JobBody
from app.pipeline import Pipeline
from app.schemas import CalibrationRequest, DocumentsIn, to_documents, to_ingest_out, to_items
from retrieval.ingest import Ingestor


def job_runners(
    pipeline: Pipeline, ingestor: Ingestor, answers: AnswerCache, settings: Settings
) -> dict[str, JobBody]:
    async def ingest(job: Job) -> dict[str, Any]:
        docs = to_documents(DocumentsIn.model_validate(job.request))
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            job.progress = round(done / len(docs), 3)

        try:
            report = await anyio.to_thread.run_sync(
                lambda: ingestor.ingest(job.collection, docs, progress=advance)
            )
        finally:  # even a half-done batch changed the collection
            await answers.invalidate(job.collection)
        return to_ingest_out(job.collection, report).model_dump()

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
            )
        result = await body(job)
        await answers.invalidate(job.collection)
        return result

    return {"ingest": ingest, "calibration": calibrate}
