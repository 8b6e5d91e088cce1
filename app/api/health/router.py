"""Liveness and readiness (``app.api.health.serving`` says what readiness means)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import MetricsDep, ServicesDep, SettingsDep
from app.api.health.protocol import ReadyOut
from app.api.health.serving import readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
async def readyz(services: ServicesDep, settings: SettingsDep, metrics: MetricsDep) -> JSONResponse:
    """200 when this pod can serve its routes; 503 naming what failed. Every check runs (each
    bounded, concurrently, so a hung dependency fails the probe instead of hanging it) and is
    reported in ``checks`` and in ``/metrics``; ``required`` names those that decide."""
    out = await readiness(services, settings, metrics)
    return JSONResponse(out.model_dump(), status_code=503 if out.status == "unavailable" else 200)
