"""Checks every request body before any route reads it: what no route could parse gets one
clear error here (415 wrong content type, 413 too large, 400 not UTF-8), in the usual envelope."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from app.errors import error_response

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def guard_body(request: Request, limit: int) -> JSONResponse | None:
    """None when the body may go on to the route (it is then buffered and replayed to it)."""
    if request.method not in _BODY_METHODS:
        return None
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        return error_response(
            request,
            415,
            "unsupported_media_type",
            f"send the body as JSON with Content-Type: application/json (got {ctype or 'none'!r})",
        )
    too_large = f"request body over the {limit:,}-byte limit (COVRAG_MAX_BODY_BYTES)"
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return error_response(request, 413, "payload_too_large", too_large)
    body = bytearray()
    async for part in request.stream():  # a chunked body has no length to check up front
        body += part
        if len(body) > limit:
            return error_response(request, 413, "payload_too_large", too_large)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return error_response(
            request, 400, "invalid_encoding", f"body is not UTF-8 (byte {exc.start})"
        )
    request._body = bytes(body)  # Starlette replays a cached body to the route
    return None
