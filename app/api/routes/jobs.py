"""``GET /v1/jobs/{id}``: status, progress and errors of a background job."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import JobsDep
from app.schemas import ErrorOut, JobOut, to_job_out

router = APIRouter(tags=["jobs"])


@router.get("/v1/jobs/{job_id}", response_model=JobOut, responses={404: {"model": ErrorOut}})  # type: ignore[dict-item]
async def get_job(job_id: str, jobs: JobsDep) -> JobOut:
    return to_job_out(jobs.get(job_id))
