"""Calibrating a collection: the handlers behind the routes, and the ``calibration`` job's
runner (a stored request read into ``app.background``'s domain work). The default alpha of a
calibration is resolved here, for the check before the job and for the job itself."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import anyio
from fastapi import Response

from app.api.calibration.protocol import (
    CalibrationOut,
    CalibrationRequest,
    CalibrationStatusOut,
    CalibrationVersionsOut,
    DriftOut,
    RestoreRequest,
    to_calibration_out,
    to_items,
    to_versions_out,
)
from app.api.jobs.protocol import JobOut, to_job_out
from app.api.jobs.serving import accept
from app.background import CalibrationTask, JobWork
from app.config import Settings
from app.services import Services
from app.state.auth import Principal
from app.state.cache import AnswerCache
from app.state.catalog import Catalog
from app.state.jobs import Job, JobRegistry
from retrieval.calibration import kept_calibrations, restore_calibration


def default_alpha(asked: float | None, settings: Settings) -> float:
    """The alpha queries get when they name none: the one asked for, else
    ``COVRAG_DEFAULT_ALPHA`` (``covrag calibrate --local`` resolves it here too)."""
    return asked or settings.calibration.default_alpha


def to_task(body: CalibrationRequest, settings: Settings) -> CalibrationTask:
    return CalibrationTask(
        items=None if body.qa is None else to_items(body.qa),
        generate=body.generate or 0,
        seed=body.seed,
        default_alpha=default_alpha(body.default_alpha, settings),
        replace_smaller=body.replace_smaller,
    )


async def start_calibration(
    name: str,
    body: CalibrationRequest,
    response: Response,
    catalog: Catalog,
    jobs: JobRegistry,
    settings: Settings,
    principal: Principal,
) -> JobOut:
    principal.check(name, "name")
    await anyio.to_thread.run_sync(
        lambda: catalog.check_calibration(
            name,
            body.questions,
            generated=body.generate is not None,
            default_alpha=default_alpha(body.default_alpha, settings),
            replace_smaller=body.replace_smaller,
        )
    )
    return await accept(jobs, response, "calibration", name, body.model_dump(mode="json"))


async def get_calibration(
    name: str, services: Services, jobs: JobRegistry, principal: Principal
) -> CalibrationStatusOut:
    principal.check(name, "name")
    calibration, stale = await anyio.to_thread.run_sync(services.retriever.calibration, name)
    job = await jobs.latest("calibration", name)
    watch = None if calibration is None else services.drift.current(name, calibration.version)
    return CalibrationStatusOut(
        collection=name,
        calibration=None if calibration is None else to_calibration_out(calibration, stale),
        drift=None if watch is None else DriftOut(**asdict(watch.status())),
        job=None if job is None else to_job_out(job),
    )


async def list_versions(
    name: str, services: Services, principal: Principal
) -> CalibrationVersionsOut:
    principal.check(name, "name")
    kept = await anyio.to_thread.run_sync(kept_calibrations, services.store, name)
    return to_versions_out(name, kept)


async def restore(
    name: str,
    body: RestoreRequest,
    services: Services,
    answers: AnswerCache,
    principal: Principal,
) -> CalibrationOut:
    principal.check(name, "name")
    restored = await anyio.to_thread.run_sync(
        restore_calibration, services.store, name, body.version
    )
    await answers.invalidate(name)  # answers cached under the other threshold
    _, stale = await anyio.to_thread.run_sync(services.retriever.calibration, name)
    return to_calibration_out(restored, stale)


async def run_calibration(work: JobWork, settings: Settings, job: Job) -> dict[str, Any]:
    task = to_task(CalibrationRequest.model_validate(job.request), settings)
    return await work.calibrate(job, task)
