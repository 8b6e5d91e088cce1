"""Calibrating a collection: start a background job, read the calibration and the latest job,
list the kept versions and make one current again."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.calibration import serving
from app.api.calibration.protocol import (
    CalibrationOut,
    CalibrationRequest,
    CalibrationStatusOut,
    CalibrationVersionsOut,
    RestoreRequest,
)
from app.api.deps import (
    AnswersDep,
    CatalogDep,
    JobsDep,
    PrincipalDep,
    ServicesDep,
    SettingsDep,
)
from app.api.jobs.protocol import ACCEPTED, JobOut
from app.api.protocol import COLLECTION_ERRORS, GUARD_ERRORS, CollectionName

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
    return await serving.start_calibration(name, body, response, catalog, jobs, settings, principal)


@router.get("/{name}/calibration", response_model=CalibrationStatusOut, responses=COLLECTION_ERRORS)
async def get_calibration(
    name: CollectionName, services: ServicesDep, jobs: JobsDep, principal: PrincipalDep
) -> CalibrationStatusOut:
    return await serving.get_calibration(name, services, jobs, principal)


@router.get(
    "/{name}/calibration/versions",
    response_model=CalibrationVersionsOut,
    responses=COLLECTION_ERRORS,
)
async def list_calibration_versions(
    name: CollectionName, services: ServicesDep, principal: PrincipalDep
) -> CalibrationVersionsOut:
    """The kept calibrations, newest version first; ``[]`` if never calibrated."""
    return await serving.list_versions(name, services, principal)


@router.post(
    "/{name}/calibration/restore",
    response_model=CalibrationOut,
    responses={**COLLECTION_ERRORS, **GUARD_ERRORS},
)
async def restore_calibration_version(
    name: CollectionName,
    body: RestoreRequest,
    services: ServicesDep,
    answers: AnswersDep,
    principal: PrincipalDep,
) -> CalibrationOut:
    """Make a kept calibration current again; queries use it from now on (stale if the
    collection changed since it was taken). 404 for a version not kept."""
    return await serving.restore(name, body, services, answers, principal)
