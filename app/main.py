"""``create_app(settings)``: the FastAPI app, lifespan and middleware; nothing runs at import."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from app.api.guard import guard_body
from app.api.main import api_router
from app.config import Settings, get_settings
from app.errors import install_error_handlers
from app.jobs import JobRegistry
from app.services import build_services

log = logging.getLogger("covrag")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; its parts are created in the lifespan, once per server process."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings)
        app.state.settings = settings
        app.state.pipeline = services.pipeline
        app.state.ingestor = services.ingestor
        app.state.jobs = JobRegistry()
        log.info("covrag ready: store=%s embedder=%s", settings.store, settings.embedder)
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
    )
    install_error_handlers(app)

    @app.middleware("http")
    async def request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Accept or mint an ``X-Request-ID`` (it reaches the response and the vLLM call); refuse
        bodies no route could parse."""
        rid = request.headers.get("x-request-id", "")[:128] or uuid.uuid4().hex
        request.state.request_id = rid
        response = await guard_body(request, settings.max_body_bytes) or await call_next(request)
        response.headers["X-Request-ID"] = rid
        return response

    app.include_router(api_router)
    return app
