"""Liveness and readiness. Readiness is about *this pod*: it is ready when it can serve its own
routes (store, in-process embedder, calibration where required, Redis when configured). The
workers every pod shares (the generator, a remote embedder) are checked and reported, but do
not take the pod out of the Service: with one vLLM replica, a rollout or a node drain would
otherwise remove every API pod, and with it retrieval, ingestion and job status, which do not
need vLLM. ``COVRAG_READY_REQUIRES_WORKERS`` restores the strict behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.deps import MetricsDep, PipelineDep, SettingsDep
from app.core.pipeline import Pipeline
from app.schemas import ReadyOut
from retrieval.errors import CollectionNotFound, NotCalibrated

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
async def readyz(
    request: Request, pipeline: PipelineDep, settings: SettingsDep, metrics: MetricsDep
) -> JSONResponse:
    """200 when this pod can serve its routes; 503 naming what failed. Every check runs (each
    bounded, concurrently, so a hung dependency fails the probe instead of hanging it) and is
    reported in ``checks`` and in ``/metrics``; ``required`` names those that decide."""
    checks: dict[str, Callable[[], Awaitable[object]]] = {
        "store": lambda: anyio.to_thread.run_sync(pipeline.store.ping),
        "embedder": lambda: anyio.to_thread.run_sync(pipeline.embedder.embed, ["readiness"]),
        "generator": pipeline.generator.ping,
        "calibration": lambda: anyio.to_thread.run_sync(
            _calibration,
            pipeline,
            settings.collections.default,
            settings.server.require_calibration,
        ),
    }
    redis = request.app.state.backends.redis
    if redis is not None:
        checks["redis"] = redis.ping
    workers = {"generator"} | ({"embedder"} if settings.embedder.kind == "remote" else set())
    required = [c for c in checks if settings.server.ready_requires_workers or c not in workers]
    results = await asyncio.gather(
        *(_check(c, settings.server.ready_timeout_s) for c in checks.values())
    )
    body = dict(zip(checks, results, strict=True))
    metrics.observe_readiness({name: v == "ok" for name, v in body.items()}, required)
    ready = all(body[c] == "ok" for c in required)
    status = "ready" if ready else "unavailable"
    if ready and any(v != "ok" for v in body.values()):
        status = "degraded"
    out = ReadyOut(status=status, checks=body, required=required)
    return JSONResponse(out.model_dump(), status_code=200 if ready else 503)


async def _check(probe: Callable[[], Awaitable[object]], timeout_s: float) -> str:
    try:
        async with asyncio.timeout(timeout_s):
            await probe()
    except TimeoutError:
        return f"failed: no answer within {timeout_s:g} s"
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {exc}"
    return "ok"


def _calibration(pipeline: Pipeline, collection: str, required: bool) -> None:
    """The default collection's calibration loads; with ``required``, it exists and is fresh."""
    try:
        calibration, stale = pipeline.retriever.calibration(collection)
    except CollectionNotFound:
        if required:
            raise
        return
    if required and calibration is None:
        raise NotCalibrated(f"collection {collection!r} has no calibration")
    if required and stale:
        raise NotCalibrated(f"the calibration of {collection!r} is stale: recalibrate")
