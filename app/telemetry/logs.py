"""Logging for ``covrag serve``: one JSON object per line, which log shippers parse without a
pattern, each tagged with the id of the request it was written under."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from datetime import UTC, datetime

from pydantic_core import to_json

#: The request being served: set by the request middleware, read by every log line under it.
#: A ContextVar is per-task by design, so concurrent requests never see each other's id.
REQUEST_ID: ContextVar[str | None] = ContextVar("covrag_request_id", default=None)

#: Attributes every LogRecord has; anything else on a record came from ``extra=`` and is output
#: (but uvicorn's ``color_message``, the message again with terminal colours).
_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """``ts``, ``level``, ``logger``, ``message``, ``request_id`` (under a request), the
    record's ``extra`` fields, and ``exc_info`` as formatted text."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            out["request_id"] = request_id
        out.update((k, v) for k, v in record.__dict__.items() if k not in _RECORD_FIELDS)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return to_json(out, fallback=str).decode()  # a third of json.dumps's time


def configure_logging(level: str, json: bool) -> None:
    """Send every logger (uvicorn's too: it is run without its own config) to stderr."""
    # No format here prints them: a LogRecord skips looking them up (~5 µs a line).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
