"""Background jobs' wire model, and how a route that starts one is documented (202, the job)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, Field

from app.api.protocol import COLLECTION_ERRORS, GUARD_ERRORS
from app.state.jobs import Job


class JobOut(BaseModel):
    id: str
    kind: str
    collection: str
    status: str = Field(description="queued, running, succeeded or failed")
    progress: float
    created_at: str
    finished_at: str | None
    error: str | None
    result: dict[str, Any] | None
    messages: list[str]
    attempts: int = Field(description="Runs started; above 1 after an API restart resumed it.")


def to_job_out(job: Job) -> JobOut:
    return JobOut(**{k: v for k, v in asdict(job).items() if k != "request"})


#: The decorator arguments of a route that starts a job.
ACCEPTED: dict[str, Any] = {
    "status_code": 202,
    "response_model": JobOut,
    "responses": {**COLLECTION_ERRORS, **GUARD_ERRORS},
}
