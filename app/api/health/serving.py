"""Readiness is about *this pod*: it is ready when it can serve its own routes (store,
in-process embedder, calibration where required, Redis when configured). The workers every pod
shares (the generator, a remote embedder, a reranker worker) are checked and reported, but do
not take the pod out of the Service: with one vLLM replica, a rollout or a node drain would
otherwise remove every API pod, and with it retrieval, ingestion and job status, which do not
need vLLM. ``COVRAG_READY_REQUIRES_WORKERS`` restores the strict behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
from redis.asyncio import Redis

from app.api.health.protocol import ReadyOut
from app.config import Settings
from app.services import Services
from app.telemetry.metrics import Metrics
from retrieval.errors import CollectionNotFound, NotCalibrated
from retrieval.rerank import RemoteReranker
from retrieval.retriever import Retriever


async def readiness(services: Services, settings: Settings, metrics: Metrics) -> ReadyOut:
    """The probe's body, also recorded in the metrics: bounded checks run concurrently, so a
    hung dependency fails the probe instead of hanging it."""
    checks: dict[str, Callable[[], Awaitable[object]]] = {
        "store": lambda: anyio.to_thread.run_sync(services.store.ping),
        "embedder": lambda: anyio.to_thread.run_sync(services.embedder.embed, ["readiness"]),
        "generator": services.generator.ping,
        "calibration": lambda: anyio.to_thread.run_sync(
            _calibration,
            services.retriever,
            settings.collections.default,
            settings.server.require_calibration,
        ),
    }
    redis: Redis | None = services.backends.redis
    if redis is not None:
        checks["redis"] = redis.ping
    workers = {"generator", "reranker"} | (
        {"embedder"} if settings.embedder.kind == "remote" else set()
    )
    reranking = services.retriever.reranking
    if reranking is not None and isinstance(reranking.reranker, RemoteReranker):
        checks["reranker"] = partial(anyio.to_thread.run_sync, reranking.reranker.ping)
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
    return ReadyOut(status=status, checks=body, required=required)


async def _check(probe: Callable[[], Awaitable[object]], timeout_s: float) -> str:
    try:
        async with asyncio.timeout(timeout_s):
            await probe()
    except TimeoutError:
        return f"failed: no answer within {timeout_s:g} s"
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {exc}"
    return "ok"


def _calibration(retriever: Retriever, collection: str, required: bool) -> None:
    """The default collection's calibration loads; with ``required``, it exists and is fresh."""
    try:
        calibration, stale = retriever.calibration(collection)
    except CollectionNotFound:
        if required:
            raise
        return
    if required and calibration is None:
        raise NotCalibrated(f"collection {collection!r} has no calibration")
    if required and stale:
        raise NotCalibrated(f"the calibration of {collection!r} is stale: recalibrate")
