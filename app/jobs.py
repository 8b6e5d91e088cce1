"""Background jobs (calibration now, ingestion later), tracked in process.

The serving issue moves this registry to Redis so jobs survive a restart; the interface stays.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

log = logging.getLogger("covrag.jobs")

JobStatus = Literal["queued", "running", "succeeded", "failed"]


class JobNotFound(LookupError):
    """No job with that id."""


@dataclass
class Job:
    """A job's public state; ``progress`` runs from 0 to 1."""

    id: str
    kind: str
    collection: str
    status: JobStatus = "queued"
    progress: float = 0.0
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished_at: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    messages: list[str] = field(default_factory=list)


#: A job body gets its ``Job`` to report progress and messages on, and returns the result.
JobBody = Callable[[Job], Awaitable[dict[str, Any]]]


class JobRegistry:
    """Runs job bodies as asyncio tasks and keeps their state for ``GET /v1/jobs/{id}``."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, kind: str, collection: str, body: JobBody) -> Job:
        job = Job(id=uuid.uuid4().hex, kind=kind, collection=collection)
        self._jobs[job.id] = job
        task = asyncio.create_task(self._run(job, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, job: Job, body: JobBody) -> None:
        job.status = "running"
        try:
            job.result = await body(job)
            job.status, job.progress = "succeeded", 1.0
        except asyncio.CancelledError:
            job.status, job.error = "failed", "cancelled: the server shut down"
            raise
        except Exception as exc:  # a job must end in a reported state, whatever broke
            log.exception("job %s failed", job.id)
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.finished_at = datetime.now(UTC).isoformat()

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(f"job {job_id!r} not found") from None

    def latest(self, kind: str, collection: str) -> Job | None:
        jobs = [j for j in self._jobs.values() if j.kind == kind and j.collection == collection]
        return max(jobs, key=lambda j: j.created_at) if jobs else None

    async def aclose(self) -> None:
        """Cancel what still runs (shutdown): those jobs end as failed."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
