"""Calibrating a collection: start a background job, read the calibration and the latest job."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Response

from app.api.deps import JobsDep, PipelineDep, PrincipalDep
from app.api.routes.jobs import ACCEPTED, COLLECTION_ERRORS, accept
from app.schemas import (
    CalibrationRequest,
    CalibrationStatusOut,
    CollectionName,
    JobOut,
    to_calibration_out,
    to_job_out,
)
from retrieval.errors import CollectionEmpty

router = APIRouter(prefix="/v1/collections", tags=["calibration"])


@router.post("/{name}/calibration", **ACCEPTED)
async def start_calibration(
    name: CollectionName,
    body: CalibrationRequest,
    response: Response,
    pipeline: PipelineDep,
    jobs: JobsDep,
    principal: PrincipalDep,
) -> JobOut:
    """202 with the job; poll ``GET /v1/jobs/{id}`` (also in ``Location``)."""
    principal.check(name, "name")
    info = await anyio.to_thread.run_sync(pipeline.store.get_collection, name)
    if info.chunks == 0:
        raise CollectionEmpty(f"collection {name!r} is empty: ingest documents before calibrating")
    return await accept(jobs, response, "calibration", name, body.model_dump(mode="json"))


@router.get("/{name}/calibration", response_model=CalibrationStatusOut, responses=COLLECTION_ERRORS)  # type: ignore[arg-type]
async def get_calibration(
    name: CollectionName, pipeline: PipelineDep, jobs: JobsDep, principal: PrincipalDep
) -> CalibrationStatusOut:
    principal.check(name, "name")
    calibration, stale = await anyio.to_thread.run_sync(pipeline.retriever.calibration, name)
    job = await jobs.latest("calibration", name)
    return CalibrationStatusOut(
        collection=name,
        calibration=None if calibration is None else to_calibration_out(calibration, stale),
        job=None if job is None else to_job_out(job),
    )
