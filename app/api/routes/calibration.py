"""Calibrating a collection: start a background job, read the calibration and the latest job,
list the kept versions and make one current again."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial

import anyio
from fastapi import APIRouter, Response

from app.api.deps import AnswersDep, CatalogDep, JobsDep, PipelineDep, PrincipalDep, SettingsDep
from app.api.guard import GUARD_ERRORS
from app.api.routes.jobs import ACCEPTED, COLLECTION_ERRORS, accept
from app.schemas import (
    CalibrationOut,
    CalibrationRequest,
    CalibrationStatusOut,
    CalibrationVersionsOut,
    CollectionName,
    DriftOut,
    JobOut,
    RestoreRequest,
    to_calibration_out,
    to_job_out,
    to_versions_out,
)
from retrieval.calibration import kept_calibrations, restore_calibration

router = APIRouter(prefix="/v1/collections", tags=["calibration"])


@router.post("/{name}/calibration", **ACCEPTED)
async def start_calibration(
    name: CollectionName,
    body: CalibrationRequest,
    response: Response,
    catalog: CatalogDep,
    jobs: JobsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> JobOut:
    """202 with the job; poll ``GET /v1/jobs/{id}`` (also in ``Location``).

    Refused before any work: an empty collection (409), ``generate`` above its chunk count
    (422), a ``default_alpha`` below 1/(n+1) (422), or fewer than half the current
    calibration's questions without ``replace_smaller`` (409).
    """
    principal.check(name, "name")
    check = partial(
        catalog.check_calibration,
        name,
        body.questions,
        generated=body.generate is not None,
        default_alpha=body.default_alpha or settings.calibration.default_alpha,
        replace_smaller=body.replace_smaller,
    )
    await anyio.to_thread.run_sync(check)
    return await accept(jobs, response, "calibration", name, body.model_dump(mode="json"))


@router.get("/{name}/calibration", response_model=CalibrationStatusOut, responses=COLLECTION_ERRORS)
async def get_calibration(
    name: CollectionName, pipeline: PipelineDep, jobs: JobsDep, principal: PrincipalDep
) -> CalibrationStatusOut:
    principal.check(name, "name")
    calibration, stale = await anyio.to_thread.run_sync(pipeline.retriever.calibration, name)
    job = await jobs.latest("calibration", name)
    watch = (
        None
        if calibration is None or pipeline.drift is None
        else pipeline.drift.current(name, calibration.version)
    )
    return CalibrationStatusOut(
        collection=name,
        calibration=None if calibration is None else to_calibration_out(calibration, stale),
        drift=None if watch is None else DriftOut(**asdict(watch.status())),
        job=None if job is None else to_job_out(job),
    )


@router.get(
    "/{name}/calibration/versions",
    response_model=CalibrationVersionsOut,
    responses=COLLECTION_ERRORS,
)
async def list_calibration_versions(
    name: CollectionName, pipeline: PipelineDep, principal: PrincipalDep
) -> CalibrationVersionsOut:
    """The kept calibrations, newest version first; ``[]`` if never calibrated."""
    principal.check(name, "name")
    kept = await anyio.to_thread.run_sync(kept_calibrations, pipeline.store, name)
    return to_versions_out(name, kept)


@router.post(
    "/{name}/calibration/restore",
    response_model=CalibrationOut,
    responses={**COLLECTION_ERRORS, **GUARD_ERRORS},
)
async def restore_calibration_version(
    name: CollectionName,
    body: RestoreRequest,
    pipeline: PipelineDep,
    answers: AnswersDep,
    principal: PrincipalDep,
) -> CalibrationOut:
    """Make a kept calibration current again; queries use it from now on (stale if the
    collection changed since it was taken). 404 for a version not kept."""
    principal.check(name, "name")
    restored = await anyio.to_thread.run_sync(
        restore_calibration, pipeline.store, name, body.version
    )
    await answers.invalidate(name)  # answers cached under the other threshold
    _, stale = await anyio.to_thread.run_sync(pipeline.retriever.calibration, name)
    return to_calibration_out(restored, stale)
