"""Starting a background job (the routes that do answer 202 with it) and reading one back."""

from __future__ import annotations

from typing import Any

from fastapi import Response

from app.api.jobs.protocol import JobOut, to_job_out
from app.state.auth import Principal
from app.state.jobs import JobRegistry


async def accept(
    jobs: JobRegistry, response: Response, kind: str, collection: str, request: dict[str, Any]
) -> JobOut:
    """Store and start the job, then answer 202 with it; poll ``Location``."""
    job = await jobs.submit(kind, collection, request)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return to_job_out(job)


async def get_job(job_id: str, jobs: JobRegistry, principal: Principal) -> JobOut:
    job = await jobs.get(job_id)
    principal.check(job.collection, "job_id")
    return to_job_out(job)
