"""Liveness and readiness: ready only when every dependency actually answers."""

from __future__ import annotations

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import PipelineDep
from app.schemas import ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
async def readyz(pipeline: PipelineDep) -> JSONResponse:
    """200 when the store, the embedder and a generator replica answer; 503 naming what did not."""
    checks: dict[str, str] = {}
    try:
        await anyio.to_thread.run_sync(pipeline.store.ping)
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"failed: {exc}"
    try:
        await anyio.to_thread.run_sync(pipeline.embedder.embed, ["readiness probe"])
        checks["embedder"] = "ok"
    except Exception as exc:
        checks["embedder"] = f"failed: {exc}"
    try:
        await pipeline.generator.ping()
        checks["generator"] = "ok"
    except Exception as exc:
        checks["generator"] = f"failed: {exc}"
    ready = all(v == "ok" for v in checks.values())
    body = ReadyOut(status="ready" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
