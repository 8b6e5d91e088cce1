"""The one table from domain exceptions to HTTP status, and the error envelope.

Routes never raise ``HTTPException`` for domain errors: they let these propagate and the
handlers registered by ``install_error_handlers`` answer ``{error: {type, message, param},
request_id}``.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from app.api.protocol import ErrorBody, ErrorOut
from app.core.types import InvalidQuery
from app.state.auth import AuthError, Forbidden, RateLimited, RateLimiterUnavailable
from app.state.jobs import JobNotFound
from critic.errors import CriticUnavailable
from llm import (
    GeneratorBusy,
    GeneratorRejected,
    GeneratorTimeout,
    GeneratorUnavailable,
)
from retrieval.errors import (
    AlphaOutOfRange,
    CalibrationShrinks,
    CalibrationVersionNotFound,
    CollectionBusy,
    CollectionEmpty,
    CollectionExists,
    CollectionNotFound,
    DefaultAlphaUnsupported,
    DocumentNotFound,
    EmbedderMismatch,
    EmbedderUnavailable,
    FileTooLarge,
    IndexBuildRunning,
    InvalidCollectionName,
    InvalidDocument,
    KeywordsUnavailable,
    NotCalibrated,
    NotEnoughChunks,
    RerankerDown,
    RerankerUnavailable,
    StoreUnavailable,
    UnsupportedFileType,
)

log = logging.getLogger("covrag.errors")

#: (exception class, HTTP status, error type); the first matching row wins.
STATUS_TABLE: list[tuple[type[Exception], int, str]] = [
    (InvalidQuery, 422, "invalid_request"),
    (UnsupportedFileType, 415, "unsupported_media_type"),
    (FileTooLarge, 413, "payload_too_large"),
    (InvalidDocument, 422, "invalid_document"),
    (InvalidCollectionName, 422, "invalid_request"),
    (AlphaOutOfRange, 422, "invalid_request"),
    (NotEnoughChunks, 422, "invalid_request"),
    (DefaultAlphaUnsupported, 422, "invalid_request"),
    (CollectionNotFound, 404, "not_found"),
    (JobNotFound, 404, "not_found"),
    (CalibrationVersionNotFound, 404, "not_found"),
    (NotCalibrated, 409, "not_calibrated"),
    (KeywordsUnavailable, 409, "keywords_unavailable"),
    (RerankerUnavailable, 409, "reranker_unavailable"),
    (RerankerDown, 503, "reranker_worker_unavailable"),
    (CollectionEmpty, 409, "collection_empty"),
    (DocumentNotFound, 404, "not_found"),
    (CollectionExists, 409, "conflict"),
    (CollectionBusy, 409, "conflict"),
    (IndexBuildRunning, 409, "conflict"),
    (CalibrationShrinks, 409, "conflict"),
    (EmbedderMismatch, 409, "embedder_mismatch"),
    (StoreUnavailable, 503, "store_unavailable"),
    (EmbedderUnavailable, 503, "embedder_unavailable"),
    (GeneratorUnavailable, 503, "generator_unavailable"),
    (GeneratorBusy, 503, "generator_busy"),
    (GeneratorTimeout, 504, "generator_timeout"),
    (GeneratorRejected, 502, "generator_rejected"),
    (CriticUnavailable, 503, "critic_unavailable"),
    (AuthError, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (RateLimited, 429, "rate_limited"),
    (RateLimiterUnavailable, 503, "rate_limiter_unavailable"),
    (RedisError, 503, "redis_unavailable"),  # jobs cannot be stored or read without it
]


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(
    request: Request,
    status: int,
    type_: str,
    message: str,
    param: str | None = None,
    retry_after: float | None = None,
) -> JSONResponse:
    """The error envelope; ``retry_after`` (seconds) becomes a ``Retry-After`` header, so a
    client told 429 or 503 knows when to come back."""
    body = ErrorOut(
        error=ErrorBody(type=type_, message=message, param=param), request_id=request_id_of(request)
    )
    headers = {"X-Request-ID": body.request_id} if body.request_id else {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def classify(exc: Exception) -> tuple[int, ErrorBody]:
    """The status and error body of a domain exception (500 for anything unexpected, logged)."""
    for cls, status, type_ in STATUS_TABLE:
        if isinstance(exc, cls):
            return status, ErrorBody(
                type=type_, message=str(exc), param=getattr(exc, "param", None)
            )
    log.exception("unhandled error", exc_info=exc)
    return 500, ErrorBody(type="internal_error", message="internal error; see the server log")


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    status, body = classify(exc)
    retry_after = getattr(exc, "retry_after", None)
    response = error_response(request, status, body.type, body.message, body.param, retry_after)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="covrag"'
    return response


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return error_response(
            request, 400, "invalid_json", f"malformed JSON body: {first.get('msg')}"
        )
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    param = ".".join(loc) or None
    message = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
        for e in errors
    )
    return error_response(request, 422, "invalid_request", message, param)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = error_response(request, exc.status_code, type_, str(exc.detail))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:  # Starlette's ``Allow`` names one route's methods, not the path's
        response.headers["Allow"] = ", ".join(sorted(_allowed(request.scope)))
    return response


def _allowed(scope: Scope) -> set[str]:
    """Every method some route serves at this request's path."""
    routes = iter_route_contexts(scope["app"].routes)
    return {m for r in routes if r.matches(scope)[0] is not Match.NONE for m in r.methods or ()}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    for cls, _, _ in STATUS_TABLE:
        app.add_exception_handler(cls, _domain)
    app.add_exception_handler(Exception, _domain)
