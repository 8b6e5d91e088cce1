"""The one middleware every HTTP request passes: request id, body guard, cached answers,
metrics, access log.

Plain ASGI, not ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs the route in
another task and pipes its response through a memory stream, which costs on every request and
stands between a streaming route and its client's disconnect.
"""

from __future__ import annotations

import logging
import os
import time

from fastapi.routing import RouteContext, iter_route_contexts
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.fastpath import CachedQueries
from app.api.guard import guard_body
from app.telemetry.logs import REQUEST_ID
from app.telemetry.metrics import Metrics

#: Longest client-chosen request id kept (the rest is cut off).
MAX_REQUEST_ID = 128
UNMATCHED = "unmatched"


class RequestMiddleware:
    """Accepts (or mints) ``X-Request-ID`` — into ``request.state``, the logging context and
    every response — refuses bodies no route could parse, and records each request in the
    metrics and one access log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.access = logging.getLogger("covrag.access")
        self.cached = CachedQueries()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        status = 500  # what the server error handler answers if the app raises before a response
        # In flight: the API's own work (/v1), not probes or scrapes: the autoscaling signal.
        counted = scope["path"].startswith("/v1/")
        if counted:
            self.metrics.request_started()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message["headers"] if h[0] != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            checked = await guard_body(scope, receive, self.max_body_bytes)
            if isinstance(checked, Response):
                route = _intended_route(scope)
                if route is None:  # no route takes this method and path: the router's 404, or
                    await self.app(scope, receive, send_with_id)  # 405 with Allow, says so
                else:
                    scope["route"] = route  # the router never saw it: label it
                    await checked(scope, receive, send_with_id)
            elif not await self.cached.serve(scope, checked, send_with_id):
                await self.app(scope, checked, send_with_id)
        finally:
            if counted:
                self.metrics.request_finished()
            self._record(scope, status, time.perf_counter() - start)
            REQUEST_ID.reset(token)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        """Labelled by route template (``/v1/collections/{name}``), never by raw path: one
        series per route, however many names clients send."""
        template: str = getattr(scope.get("route"), "path_format", UNMATCHED)
        method = scope["method"]
        self.metrics.observe_request(template, method, status, seconds)
        if self.access.isEnabledFor(logging.INFO):
            duration_ms = round(seconds * 1000, 3)
            self.access.info(
                "%s %s %d %.1f ms",
                method,
                scope["path"],
                status,
                duration_ms,
                extra={
                    "method": method,
                    "route": template,
                    "status": status,
                    "duration_ms": duration_ms,
                },
            )


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and value:
            return value[:MAX_REQUEST_ID].decode("latin-1")
    return os.urandom(16).hex()  # as unique as a uuid4, a fifth of the cost


def _intended_route(scope: Scope) -> RouteContext | None:
    """The route a request the guard refused was meant for: it never reached the router."""
    routes = iter_route_contexts(scope["app"].routes)  # included routers' routes, prefixed
    return next((r for r in routes if r.matches(scope)[0] is Match.FULL), None)
