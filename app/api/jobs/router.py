"""``GET /v1/jobs/{id}``: status, progress and errors of a background job."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import JobsDep, PrincipalDep
from app.api.jobs import serving
from app.api.jobs.protocol import JobOut
from app.api.protocol import error_responses

router = APIRouter(tags=["jobs"])


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobOut,
    responses=error_responses(401, 403, 404, 429, 503),
)
async def get_job(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> JobOut:
    return await serving.get_job(job_id, jobs, principal)
