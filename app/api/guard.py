"""Checks every request body before any route reads it: what no route could parse gets one
clear error here (415 wrong content type, 413 too large, 400 not UTF-8 text), in the usual
envelope. Bodies are JSON, except the file upload's (multipart/form-data).

On the path of every POST, so it reads the raw ASGI headers and messages; a ``Request`` is
built only to answer an error.
"""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope

from app.api.errors import error_response

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: The one route whose body is files (multipart/form-data) instead of JSON: counted against
#: the limit like any body, but not decoded as text.
_UPLOAD_PATH = re.compile(r"^/v1/collections/[^/]+/files$")
#: A JSON escape: ``\uXXXX`` (the hex in group 1) or a backslash and any other character.
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)


async def guard_body(
    scope: Scope, receive: Receive, limit: int
) -> Receive | Replayed | JSONResponse:
    """The error, or the ``receive`` the route reads the (checked, buffered) body from."""
    if scope["method"] not in _BODY_METHODS:
        return receive
    ctype = length = b""
    for name, value in scope["headers"]:
        if name == b"content-type":
            ctype = value
        elif name == b"content-length":
            length = value
    upload = _UPLOAD_PATH.match(scope["path"]) is not None
    wanted = b"multipart/form-data" if upload else b"application/json"
    if ctype.split(b";")[0].strip().lower() != wanted:
        got = ctype.decode("latin-1") or "none"
        what = "the files as" if upload else "the body as JSON with Content-Type:"
        return error_response(
            Request(scope),
            415,
            "unsupported_media_type",
            f"send {what} {wanted.decode()} (got {got!r})",
        )
    too_large = f"request body over the {limit:,}-byte limit (COVRAG_MAX_BODY_BYTES)"
    if length.isdigit() and int(length) > limit:
        return error_response(Request(scope), 413, "payload_too_large", too_large)
    chunks: list[bytes] = []
    size, more = 0, True
    while more:  # a chunked body has no length to check up front: it is counted while read
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return error_response(Request(scope), 413, "payload_too_large", too_large)
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if upload:
        return Replayed(body, receive)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return error_response(
            Request(scope), 400, "invalid_encoding", f"body is not UTF-8 (byte {exc.start})"
        )
    at = _lone_surrogate(body)
    if at is not None:
        return error_response(
            Request(scope),
            400,
            "invalid_encoding",
            f"body escapes half a UTF-16 surrogate pair (byte {at}): that is no character",
        )
    return Replayed(body, receive)


def _lone_surrogate(body: bytes) -> int | None:
    """Where a ``\\uD800``-``\\uDFFF`` escape stands outside a high-low pair: JSON parses it
    into a string no UTF-8 can carry, so it would fail wherever the text is next encoded."""
    if b"\\u" not in body:
        return None
    high: re.Match[bytes] | None = None  # a high half waiting for its low half
    for m in _ESCAPE.finditer(body):
        code = int(m[1], 16) if m[1] else 0
        low = 0xDC00 <= code <= 0xDFFF
        if high is not None and not (low and m.start() == high.end()):
            return high.start()
        if low and high is None:
            return m.start()
        high = m if 0xD800 <= code <= 0xDBFF else None
    return None if high is None else high.start()


class Replayed:
    """Hands the route the body already read, then the client's own messages (a disconnect);
    ``body`` lets the cached-answer path read it without another copy."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self.body = body
        self._receive = receive
        self._pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def __call__(self) -> Message:
        return self._pending.pop() if self._pending else await self._receive()
