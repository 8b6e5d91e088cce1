"""Calibrating a collection: start a background job, read the calibration and the latest job."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Response

from app.api.deps import CatalogDep, JobsDep, PipelineDep, PrincipalDep
from app.api.routes.jobs import ACCEPTED, COLLECTION_ERRORS, accept
from app.schemas import (
    CalibrationRequest,
    CalibrationStatusOut,
    CollectionName,
    JobOut,
    to_calibration_out,
    to_job_out,
)

router = APIRouter(prefix="/v1/collections", tags=["calibration"])


@router.post("/{name}/calibration", **ACCEPTED)
async def start_calibration(
    name: CollectionName,
    body: CalibrationRequest,
    response: Response,
    catalog: CatalogDep,
    jobs: JobsDep,
    principal: PrincipalDep,
) -> JobOut:
    """202 with the job; poll ``GET /v1/jobs/{id}`` (also in ``Location``). An empty
    collection is a 409; ``generate`` above its chunk count a 422, as no job could succeed."""
    principal.check(name, "name")
    await anyio.to_thread.run_sync(catalog.check_calibration, name, body.generate)
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
