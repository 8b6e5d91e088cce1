"""``POST /v1/query``: one question in, a cited answer out — as JSON, or streamed as SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.sse import format_sse_event

from app.api.deps import (
    AnswersDep,
    MetricsDep,
    PipelineDep,
    PrincipalDep,
    RequestIdDep,
    SettingsDep,
)
from app.api.errors import classify
from app.api.guard import GUARD_ERRORS
from app.api.streaming import Failed, QueryStream, StreamItem
from app.config import Settings
from app.core.pipeline import AnswerText, Pipeline, QueryParams, Round
from app.schemas import (
    CitationOut,
    ErrorOut,
    QueryRequest,
    QueryResponse,
    RoundOut,
    TokenEvent,
    component,
    sse_event,
    to_query_response,
    to_round_out,
)
from app.state.cache import AnswerCache
from app.telemetry.metrics import Metrics

router = APIRouter(tags=["query"])

ERRORS: dict[int | str, dict[str, Any]] = {
    **{code: {"model": ErrorOut} for code in (401, 403, 404, 409, 422, 429, 502, 503, 504)},
    **GUARD_ERRORS,
}
SSE_DOC = {
    "description": "The answer; with `stream` (or `Accept: text/event-stream`) a stream of "
    "server-sent events: `token`, `round`, `citations`, `done`, `error`.",
    "content": {
        "text/event-stream": {
            "schema": {
                "oneOf": [
                    sse_event(TokenEvent.model_json_schema(), "token"),
                    sse_event(component(RoundOut), "round"),
                    sse_event({"type": "array", "items": component(CitationOut)}, "citations"),
                    sse_event(component(QueryResponse), "done"),
                    sse_event(component(ErrorOut), "error"),
                ]
            }
        }
    },
}

#: Proxies must not buffer or cache an event stream.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def to_params(body: QueryRequest, settings: Settings) -> QueryParams:
    return QueryParams(
        question=body.question,
        collection=body.collection or settings.collections.default,
        top_k=body.top_k,
        filters=body.filters,
        alpha=body.alpha,
        max_rounds=body.max_rounds,
        group=body.group,
    )


@router.post(
    "/v1/query",
    response_model=QueryResponse,
    responses={200: SSE_DOC, **ERRORS},
)
async def query(
    body: QueryRequest,
    request: Request,
    pipeline: PipelineDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
    metrics: MetricsDep,
    answers: AnswersDep,
    principal: PrincipalDep,
) -> Response | QueryResponse:
    """A cited answer — served from the answer cache when this exact question was answered on
    the collection as it is now."""
    params = to_params(body, settings)
    principal.check(params.collection)
    if body.stream or "text/event-stream" in request.headers.get("accept", ""):
        return await stream_query(pipeline, params, request_id, metrics)
    found = await answer(params, request_id, pipeline, settings, answers, metrics)
    if isinstance(found, bytes):
        return Response(found, media_type="application/json")
    return found


async def answer(
    params: QueryParams,
    request_id: str,
    pipeline: Pipeline,
    settings: Settings,
    answers: AnswerCache,
    metrics: Metrics,
) -> bytes | QueryResponse:
    """The cached response (JSON with this request's id) or a new answer, then cached."""
    entry = await answers.lookup(params.collection, params.question, answer_shape(params, settings))
    if entry is not None:
        metrics.cache_result("answer", entry.value is not None)
        if entry.value is not None:
            return answers.respond(entry.value, request_id)
    outcome = await pipeline.query(params, request_id)
    response = to_query_response(outcome, request_id)
    metrics.observe_query(response)
    await answers.put(entry, response.model_dump_json(exclude={"request_id", "cached"}).encode())
    return response


def answer_shape(params: QueryParams, settings: Settings) -> dict[str, Any]:
    """Everything besides the collection's version and the question that shapes an answer
    (earlier turns of a chat rewrite the question)."""
    return {
        "history": params.history,
        "alpha": params.alpha,
        "top_k": params.top_k,
        "filters": params.filters,
        "group": params.group,
        "rounds": params.max_rounds or settings.critic.max_rounds,
        "critic": settings.critic.kind,
        "tau": settings.critic.tau,
        "model": settings.generator.model,
        "max_tokens": settings.generator.max_tokens,
        "temperature": settings.generator.temperature,
    }


async def stream_query(
    pipeline: Pipeline, params: QueryParams, request_id: str, metrics: Metrics
) -> Response:
    """The query as covrag's SSE events: ``token``… ``round``… ``citations``, ``done``."""
    stream = await QueryStream.start(pipeline, params, request_id)

    async def frames() -> AsyncIterator[bytes]:
        async for item in stream.events():
            if isinstance(item, QueryResponse):
                metrics.observe_query(item)
            for name, payload in _sse_events(item, request_id):
                yield format_sse_event(event=name, data_str=json.dumps(payload))

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)


def _sse_events(item: StreamItem, request_id: str) -> list[tuple[str, Any]]:
    if isinstance(item, AnswerText):
        return [("token", TokenEvent(round=item.round, text=item.text).model_dump(mode="json"))]
    if isinstance(item, Round):
        return [("round", to_round_out(item).model_dump(mode="json"))]
    if isinstance(item, Failed):
        _, body = classify(item.error)
        return [("error", ErrorOut(error=body, request_id=request_id).model_dump(mode="json"))]
    citations = [c.model_dump(mode="json") for c in item.citations]
    return [("citations", citations), ("done", item.model_dump(mode="json"))]
