"""Liveness and readiness: ready only when every dependency actually answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.deps import PipelineDep, SettingsDep
from app.pipeline import Pipeline
from app.schemas import ReadyOut
from retrieval.errors import CollectionNotFound, NotCalibrated

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
async def readyz(request: Request, pipeline: PipelineDep, settings: SettingsDep) -> JSONResponse:
    """200 when every dependency answers now — the store, the embedder, a generator replica
    (a one-token request), the default collection's calibration where required, Redis when
    configured; 503 naming what did not. Each check is bounded, so a hung dependency fails
    the probe instead of hanging it."""
    checks: dict[str, Callable[[], Awaitable[object]]] = {
        "store": lambda: anyio.to_thread.run_sync(pipeline.store.ping),
        "embedder": lambda: anyio.to_thread.run_sync(pipeline.embedder.embed, ["readiness"]),
        "generator": pipeline.generator.ping,
        "calibration": lambda: anyio.to_thread.run_sync(
            _calibration, pipeline, settings.default_collection, settings.require_calibration
        ),
    }
    redis = request.app.state.backends.redis
    if redis is not None:
        checks["redis"] = redis.ping
    results = await asyncio.gather(*(_check(c, settings.ready_timeout_s) for c in checks.values()))
    body = dict(zip(checks, results, strict=True))
    ready = all(v == "ok" for v in body.values())
    out = ReadyOut(status="ready" if ready else "unavailable", checks=body)
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
