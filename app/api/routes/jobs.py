"""``GET /v1/jobs/{id}``: status, progress and errors of a background job; and how the routes
that start one answer (202, the job, its URL in ``Location``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from app.api.deps import JobsDep, PrincipalDep
from app.api.guard import GUARD_ERRORS
from app.schemas import ErrorOut, JobOut, to_job_out
from app.state.jobs import JobRegistry

router = APIRouter(tags=["jobs"])

#: What a route on one collection may answer besides its result.
COLLECTION_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 422, 429, 503)
}
#: The decorator arguments of a route that starts a job.
ACCEPTED: dict[str, Any] = {
    "status_code": 202,
    "response_model": JobOut,
    "responses": {**COLLECTION_ERRORS, **GUARD_ERRORS},
}


async def accept(
    jobs: JobRegistry, response: Response, kind: str, collection: str, request: dict[str, Any]
) -> JobOut:
    """Store and start the job, then answer 202 with it; poll ``Location``."""
    job = await jobs.submit(kind, collection, request)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return to_job_out(job)


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobOut,
    responses={code: {"model": ErrorOut} for code in (401, 403, 404, 429, 503)},
)
async def get_job(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> JobOut:
    job = await jobs.get(job_id)
    principal.check(job.collection, "job_id")
    return to_job_out(job)
