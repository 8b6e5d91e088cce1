"""One query run as a stream of events, shared by ``/v1/query`` (covrag's SSE events) and the
OpenAI-compatible ``/v1/chat/completions`` (OpenAI chunks): each serving module only frames
them.

The pipeline runs in a task. An error before its first event (bad input, no collection, the
generator down) is raised by ``start``, so the route answers it with its HTTP status; a later
one arrives as an event. Closing the iterator (the client went away) cancels the task, which
closes the stream to vLLM and so aborts the generation there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from app.core.pipeline import Pipeline
from app.core.types import PipelineEvent, QueryOutcome, QueryParams


@dataclass(frozen=True, slots=True)
class Failed:
    """The run failed after it had started streaming."""

    error: Exception


#: Answer text, a judged round, the finished run, or a failure; None ends the stream.
StreamItem = PipelineEvent | QueryOutcome | Failed


class QueryStream:
    """A running query and its events; build it with ``await QueryStream.start(...)``."""

    def __init__(self, pipeline: Pipeline, params: QueryParams, request_id: str) -> None:
        self._queue: asyncio.Queue[StreamItem | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(pipeline, params, request_id))
        self._first: StreamItem | None = None

    @classmethod
    async def start(cls, pipeline: Pipeline, params: QueryParams, request_id: str) -> QueryStream:
        """Start the run and wait for its first event; raises what failed before it."""
        stream = cls(pipeline, params, request_id)
        stream._first = await stream._queue.get()
        if isinstance(stream._first, Failed):
            raise stream._first.error
        return stream

    async def _run(self, pipeline: Pipeline, params: QueryParams, request_id: str) -> None:
        try:
            await self._queue.put(await pipeline.query(params, request_id, self._queue.put))
        except Exception as exc:  # handed on: raised by start, or streamed as Failed
            await self._queue.put(Failed(exc))
        finally:
            await self._queue.put(None)

    async def events(self) -> AsyncIterator[StreamItem]:
        item = self._first
        try:
            while item is not None:
                yield item
                item = await self._queue.get()
        finally:
            self._task.cancel()
