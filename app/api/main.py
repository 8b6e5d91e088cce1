"""Mounts every family's router, and gives each job kind its runner: the family's serving
module reads the stored request into ``app.background``'s domain work."""

from functools import partial

from fastapi import APIRouter, Depends

from app.api.calibration import router as calibration
from app.api.calibration.serving import run_calibration
from app.api.collections import router as collections
from app.api.collections.serving import run_index, run_ingest
from app.api.deps import authorize
from app.api.files import router as files
from app.api.files.serving import run_files
from app.api.health import router as health
from app.api.jobs import router as jobs
from app.api.metrics import router as metrics
from app.api.openai import router as openai
from app.api.query import router as query
from app.api.retrieve import router as retrieve
from app.background import JobWork
from app.config import Settings
from app.state.jobs import JobBody

api_router = APIRouter()
#: Every /v1 route needs a key (when keys are configured); health and metrics stay open.
KEYED = [Depends(authorize)]
api_router.include_router(health.router)
api_router.include_router(metrics.router)
api_router.include_router(query.router, dependencies=KEYED)
api_router.include_router(retrieve.router, dependencies=KEYED)
api_router.include_router(collections.router, dependencies=KEYED)
api_router.include_router(files.router, dependencies=KEYED)
api_router.include_router(calibration.router, dependencies=KEYED)
api_router.include_router(jobs.router, dependencies=KEYED)
api_router.include_router(openai.router, dependencies=KEYED)


def job_runners(work: JobWork, settings: Settings) -> dict[str, JobBody]:
    return {
        "ingest": partial(run_ingest, work),
        "files": partial(run_files, work, settings.collections),
        "calibration": partial(run_calibration, work, settings),
        "index": partial(run_index, work),
    }
