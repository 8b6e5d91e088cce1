"""Mounts every router."""

from fastapi import APIRouter, Depends

from app.api.deps import authorize
from app.api.routes import (
    calibration,
    collections,
    files,
    health,
    jobs,
    metrics,
    openai,
    query,
    retrieve,
)

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
