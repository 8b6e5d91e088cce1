"""Background jobs (ingestion, calibration) that survive an API restart or say they failed.

A job is stored with the request that started it. The process running it holds a lease that it
renews while it works; a job whose lease lapsed (its process died or shut down) is claimed by
the next process to sweep — at start-up, and periodically when Redis is shared — and run again
from its request. Every kind is idempotent (ingestion skips unchanged documents; calibration
recomputes), so a rerun is safe. After ``max_attempts`` interrupted runs it is marked failed.
No job is ever left silently unfinished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from redis.asyncio import Redis

log = logging.getLogger("covrag.jobs")

JobStatus = Literal["queued", "running", "succeeded", "failed"]
UNFINISHED: tuple[JobStatus, ...] = ("queued", "running")


class JobNotFound(LookupError):
    """No job with that id."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Job:
    """A job's state; ``progress`` runs from 0 to 1; ``request`` is what a rerun starts from."""

    id: str
    kind: str
    collection: str
    status: JobStatus = "queued"
    progress: float = 0.0
    created_at: str = field(default_factory=_now)
    finished_at: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    messages: list[str] = field(default_factory=list)
    attempts: int = 0
    request: dict[str, Any] = field(default_factory=dict, repr=False)

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: str | bytes) -> Job:
        return cls(**json.loads(raw))


#: A job body reads its ``Job`` (``collection``, ``request``), reports ``progress`` and
#: ``messages`` on it, and returns the result.
JobBody = Callable[[Job], Awaitable[dict[str, Any]]]


class JobStore(Protocol):
    """Where jobs live: a directory for the embedded server, Redis when replicas share it."""

    async def save(self, job: Job) -> None: ...

    async def load(self, job_id: str) -> Job | None: ...

    async def latest(self, kind: str, collection: str) -> Job | None: ...

    async def unfinished(self) -> list[Job]: ...

    async def lease(self, job_id: str, owner: str, ttl_s: float) -> bool:
        """Take or renew the right to run ``job_id``; False if another live owner holds it."""
        ...

    async def release(self, job_id: str, owner: str) -> None: ...


class FileJobStore:
    """One JSON file per job under ``directory``; leases live in this process (one server owns
    an embedded data dir), so after a restart every unfinished job is free to resume."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._leases: dict[str, tuple[str, float]] = {}

    def _path(self, job_id: str) -> Path:
        return self._dir / f"{job_id}.json"

    async def save(self, job: Job) -> None:
        tmp = self._dir / f".{job.id}.tmp"
        tmp.write_text(job.dumps())
        os.replace(tmp, self._path(job.id))  # atomic: a crash never leaves half a job

    async def load(self, job_id: str) -> Job | None:
        if len(job_id) != 32 or not job_id.isalnum():  # ours are uuid4 hex; others may not
            return None  # even make a file name
        try:
            return Job.loads(self._path(job_id).read_text())
        except FileNotFoundError:
            return None

    def _all(self) -> list[Job]:
        return [Job.loads(p.read_text()) for p in self._dir.glob("*.json")]

    async def latest(self, kind: str, collection: str) -> Job | None:
        jobs = [j for j in self._all() if j.kind == kind and j.collection == collection]
        return max(jobs, key=lambda j: j.created_at) if jobs else None

    async def unfinished(self) -> list[Job]:
        return [j for j in self._all() if j.status in UNFINISHED]

    async def lease(self, job_id: str, owner: str, ttl_s: float) -> bool:
        held = self._leases.get(job_id)
        if held is not None and held[0] != owner and held[1] > time.monotonic():
            return False
        self._leases[job_id] = (owner, time.monotonic() + ttl_s)
        return True

    async def release(self, job_id: str, owner: str) -> None:
        if self._leases.get(job_id, ("",))[0] == owner:
            del self._leases[job_id]


#: Take the lease if free, renew it if ours; atomic so two replicas never both run a job.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _text(value: bytes | str) -> str:
    """A Redis reply as text: bytes from this client (no ``decode_responses``), str otherwise."""
    return value.decode() if isinstance(value, bytes) else value


class RedisJobStore:
    """Jobs in Redis, shared by every API replica; finished jobs expire after ``keep_s``."""

    def __init__(self, redis: Redis, *, prefix: str = "covrag:", keep_s: int = 7 * 86400) -> None:
        self._r = redis
        self._p = prefix
        self._keep_s = keep_s
        self._lease = redis.register_script(_LEASE)
        self._release = redis.register_script(_RELEASE)

    def _key(self, job_id: str) -> str:
        return f"{self._p}job:{job_id}"

    async def save(self, job: Job) -> None:
        pipe = self._r.pipeline(transaction=True)
        if job.status in UNFINISHED:
            pipe.set(self._key(job.id), job.dumps())
            pipe.sadd(f"{self._p}jobs:unfinished", job.id)
        else:
            pipe.set(self._key(job.id), job.dumps(), ex=self._keep_s)
            pipe.srem(f"{self._p}jobs:unfinished", job.id)
        pipe.set(f"{self._p}jobs:latest:{job.kind}:{job.collection}", job.id, ex=self._keep_s)
        await pipe.execute()

    async def load(self, job_id: str) -> Job | None:
        raw = await self._r.get(self._key(job_id))
        return None if raw is None else Job.loads(raw)

    async def latest(self, kind: str, collection: str) -> Job | None:
        job_id = await self._r.get(f"{self._p}jobs:latest:{kind}:{collection}")
        return None if job_id is None else await self.load(_text(job_id))

    async def unfinished(self) -> list[Job]:
        ids = await self._r.smembers(f"{self._p}jobs:unfinished")
        jobs = [await self.load(_text(i)) for i in ids]
        return [j for j in jobs if j is not None and j.status in UNFINISHED]

    async def lease(self, job_id: str, owner: str, ttl_s: float) -> bool:
        key = f"{self._key(job_id)}:lease"
        return bool(await self._lease(keys=[key], args=[owner, int(ttl_s * 1000)]))

    async def release(self, job_id: str, owner: str) -> None:
        await self._release(keys=[f"{self._key(job_id)}:lease"], args=[owner])


class JobRegistry:
    """Runs job bodies as asyncio tasks, keeps their state in a ``JobStore`` and resumes the
    unfinished jobs of processes that are gone."""

    def __init__(
        self,
        store: JobStore,
        runners: Mapping[str, JobBody],
        *,
        lease_s: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        self._store = store
        self._runners = runners
        self._lease_s = lease_s
        self._max_attempts = max_attempts
        self._owner = uuid.uuid4().hex
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._live: dict[str, Job] = {}
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, *, sweep: bool) -> None:
        """Resume orphaned jobs now and, with ``sweep`` (a shared store), every lease period.
        A store that is down now is retried by the sweep, not fatal to start-up."""
        try:
            await self.recover()
        except Exception as exc:
            log.warning("could not resume unfinished jobs yet: %s", exc)
        if sweep:
            self._sweeper = asyncio.create_task(self._sweep())

    async def submit(self, kind: str, collection: str, request: dict[str, Any]) -> Job:
        """Store the job first (so it is never lost once acknowledged), then run it."""
        if kind not in self._runners:
            raise ValueError(f"no runner for job kind {kind!r}")
        job = Job(id=uuid.uuid4().hex, kind=kind, collection=collection, request=request)
        await self._store.save(job)
        if await self._store.lease(job.id, self._owner, self._lease_s):
            self._launch(job)
        return job

    async def get(self, job_id: str) -> Job:
        job = self._running(job_id) or await self._store.load(job_id)
        if job is None:
            raise JobNotFound(f"job {job_id!r} not found")
        return job

    async def latest(self, kind: str, collection: str) -> Job | None:
        job = await self._store.latest(kind, collection)
        return None if job is None else self._running(job.id) or job

    async def unfinished(self, collection: str) -> list[Job]:
        """The queued or running jobs of ``collection``, of every kind and process."""
        jobs = await self._store.unfinished()
        return [self._running(j.id) or j for j in jobs if j.collection == collection]

    async def recover(self) -> None:
        """Claim every unfinished job whose lease lapsed: rerun it, or fail it for good."""
        for job in await self._store.unfinished():
            if job.id in self._tasks or not await self._store.lease(
                job.id, self._owner, self._lease_s
            ):
                continue
            if job.attempts >= self._max_attempts or job.kind not in self._runners:
                job.status, job.finished_at = "failed", _now()
                job.error = f"interrupted {job.attempts} times (the API restarted); resubmit it"
                await self._store.save(job)
                await self._store.release(job.id, self._owner)
                continue
            job.status = "queued"
            job.messages.append(f"{_now()}: resumed after an API restart")
            log.warning("resuming job %s (%s %s)", job.id, job.kind, job.collection)
            self._launch(job)

    def _running(self, job_id: str) -> Job | None:
        """The in-memory state of a job this process runs (fresher than the store's copy)."""
        return self._live.get(job_id)

    def _launch(self, job: Job) -> None:
        self._live[job.id] = job
        task = asyncio.create_task(self._run(job))
        self._tasks[job.id] = task
        task.add_done_callback(lambda _: (self._tasks.pop(job.id), self._live.pop(job.id)))

    async def _run(self, job: Job) -> None:
        job.status, job.attempts = "running", job.attempts + 1
        await self._store.save(job)
        heartbeat = asyncio.create_task(self._heartbeat(job))
        try:
            job.result = await self._runners[job.kind](job)
            job.status, job.progress = "succeeded", 1.0
        except asyncio.CancelledError:
            # Shutdown: leave the job unfinished and free, so it resumes on the next start.
            heartbeat.cancel()
            with contextlib.suppress(Exception):
                await self._store.save(job)
                await self._store.release(job.id, self._owner)
            raise
        except Exception as exc:  # a job must end in a reported state, whatever broke
            log.exception("job %s failed", job.id)
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
        heartbeat.cancel()
        job.finished_at = _now()
        await self._store.save(job)
        await self._store.release(job.id, self._owner)

    async def _heartbeat(self, job: Job) -> None:
        """Renew the lease and store progress while the job runs."""
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                await self._store.lease(job.id, self._owner, self._lease_s)
                await self._store.save(job)
            except Exception as exc:  # a store hiccup must not kill the job itself
                log.warning("job %s heartbeat failed: %s", job.id, exc)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s)
            try:
                await self.recover()
            except Exception as exc:
                log.warning("job sweep failed: %s", exc)

    async def aclose(self) -> None:
        """Stop running jobs without failing them: they resume on the next start."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
