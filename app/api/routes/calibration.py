"""Calibrating a collection: start a background job, read the calibration and the latest job."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Response

from app.api.deps import JobsDep, PipelineDep, SettingsDep
from app.calibration import generated_job, qa_job
from app.schemas import (
    CalibrationRequest,
    CalibrationStatusOut,
    ErrorOut,
    JobOut,
    to_calibration_out,
    to_items,
    to_job_out,
)
from retrieval.errors import CollectionEmpty

router = APIRouter(prefix="/v1/collections", tags=["calibration"])

_ERRORS = {code: {"model": ErrorOut} for code in (400, 404, 409, 422, 503)}


@router.post(
    "/{name}/calibration",
    status_code=202,
    response_model=JobOut,
    responses=_ERRORS,  # type: ignore[arg-type]
)
async def start_calibration(
    name: str,
    body: CalibrationRequest,
    response: Response,
    pipeline: PipelineDep,
    jobs: JobsDep,
    settings: SettingsDep,
) -> JobOut:
    """202 with the job; poll ``GET /v1/jobs/{id}`` (also in ``Location``)."""
    info = await anyio.to_thread.run_sync(pipeline.store.get_collection, name)
    if info.chunks == 0:
        raise CollectionEmpty(f"collection {name!r} is empty: ingest documents before calibrating")
    alpha = body.default_alpha or settings.default_alpha
    if body.qa is not None:
        run = qa_job(
            pipeline.store, pipeline.embedder, name, to_items(body.qa), default_alpha=alpha
        )
    else:
        assert body.generate is not None  # the request model guarantees one of the two
        run = generated_job(
            pipeline.store,
            pipeline.embedder,
            pipeline.generator,
            name,
            body.generate,
            seed=body.seed,
            default_alpha=alpha,
        )
    job = jobs.submit("calibration", name, run)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return to_job_out(job)


@router.get("/{name}/calibration", response_model=CalibrationStatusOut, responses=_ERRORS)  # type: ignore[arg-type]
async def get_calibration(name: str, pipeline: PipelineDep, jobs: JobsDep) -> CalibrationStatusOut:
    calibration, stale = await anyio.to_thread.run_sync(pipeline.retriever.calibration, name)
    job = jobs.latest("calibration", name)
    return CalibrationStatusOut(
        collection=name,
        calibration=None if calibration is None else to_calibration_out(calibration, stale),
        job=None if job is None else to_job_out(job),
    )
