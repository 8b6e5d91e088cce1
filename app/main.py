"""``create_app(settings)``: the FastAPI app, lifespan and middleware; nothing runs at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api.errors import install_error_handlers
from app.api.main import api_router, job_runners
from app.api.middleware import RequestMiddleware
from app.background import JobWork
from app.config import Settings, get_settings
from app.services import build_services
from app.state.catalog import Catalog
from app.state.jobs import JobBody, JobRegistry
from app.telemetry.metrics import Metrics

log = logging.getLogger("covrag")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; its parts are created in the lifespan, once per server process."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings)
        app.state.settings = settings
        app.state.services = services
        app.state.metrics.watch_generator(services.generator)
        app.state.metrics.watch_drift(services.drift)
        app.state.answers = answers = services.backends.answers
        app.state.metrics.watch_caches(services.backends.query_cache, lambda: answers.stats.errors)
        app.state.gate = services.gate
        runners: dict[str, JobBody] = {}
        app.state.jobs = jobs = JobRegistry(
            services.backends.job_store,
            runners,
            lease_s=settings.jobs.lease_s,
            max_attempts=settings.jobs.max_attempts,
        )
        # Filled once the registry exists: ingestion submits index jobs to it.
        runners.update(job_runners(JobWork(services, answers, settings, jobs), settings))
        app.state.catalog = Catalog(
            services.store,
            services.ingestor,
            jobs,
            answers,
            max_documents=settings.collections.max_documents_per_request,
        )
        await app.state.jobs.start(sweep=settings.redis.url is not None)
        log.info("covrag ready: store=%s embedder=%s", settings.store.kind, settings.embedder.kind)
        try:
            yield
        finally:
            await app.state.jobs.aclose()
            await services.aclose()

    app = FastAPI(
        title="covrag",
        version="0.1.0",
        summary="RAG serving with a measured evidence guarantee.",
        lifespan=lifespan,
        telemetry={
            "tracing": settings.server.otel,
            "metrics": settings.server.otel,
            "logs": settings.server.otel,
        },
    )
    install_error_handlers(app)
    app.state.metrics = metrics = Metrics()  # before the lifespan: the middleware records into it
    app.add_middleware(
        RequestMiddleware, metrics=metrics, max_body_bytes=settings.limits.max_body_bytes
    )

    app.include_router(api_router)
    return app
