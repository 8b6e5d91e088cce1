"""``POST /v1/query``'s handler logic, shared with ``/v1/retrieve``, the OpenAI façade, the
cached-answer fast path and ``covrag ask --local``: a request's defaults and its answer-cache
key are resolved here, once; the answer comes from the cache or the pipeline, as JSON or as
covrag's SSE events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.sse import format_sse_event

from app.api.errors import classify
from app.api.protocol import ErrorOut
from app.api.query.protocol import (
    QueryRequest,
    QueryResponse,
    TokenEvent,
    to_query_response,
    to_round_out,
)
from app.api.streaming import Failed, QueryStream, StreamItem
from app.config import Settings
from app.core.types import AnswerText, LoopPolicy, QueryOutcome, QueryParams, Round
from app.services import Services
from app.state.auth import Principal
from app.state.cache import AnswerCache
from app.telemetry.metrics import Metrics


def to_params(body: QueryRequest, settings: Settings) -> QueryParams:
    """The request with its collection resolved; the pipeline's policy fills the rest."""
    return QueryParams(
        question=body.question,
        collection=body.collection or settings.collections.default,
        top_k=body.top_k,
        filters=body.filters,
        alpha=body.alpha,
        max_rounds=body.max_rounds,
        group=body.group,
        search=body.search or settings.limits.default_search,
        rerank=settings.reranker.default if body.rerank is None else body.rerank,
    )


def answer_shape(params: QueryParams, policy: LoopPolicy, settings: Settings) -> dict[str, Any]:
    """Everything besides the collection's version and the question that shapes an answer
    (earlier turns of a chat rewrite the question): the answer cache's key. The rounds and τ
    are the policy's, as the pipeline resolved them for this request."""
    return {
        "history": params.history,
        "alpha": params.alpha,
        "top_k": params.top_k,
        "filters": params.filters,
        "group": params.group,
        "search": params.search,
        "rerank": params.rerank,
        "score": settings.calibration.score,
        "multi_hop_links": settings.calibration.multi_hop_links,
        "rounds": policy.max_rounds,
        "critic": settings.critic.kind,
        "tau": policy.tau,
        "model": settings.generator.model,
        "max_tokens": settings.generator.max_tokens,
        "temperature": settings.generator.temperature,
    }


def respond(outcome: QueryOutcome, request_id: str, metrics: Metrics) -> QueryResponse:
    """A finished run as the wire answer, counted in the metrics (streamed or not)."""
    metrics.observe_query(outcome.timings_ms, len(outcome.rounds), outcome.abstained)
    return to_query_response(outcome, request_id)


async def answer(
    params: QueryParams,
    request_id: str,
    services: Services,
    settings: Settings,
    answers: AnswerCache,
    metrics: Metrics,
) -> bytes | QueryResponse:
    """The cached response (JSON with this request's id) or a new answer, then cached."""
    policy = services.pipeline.default_policy(params)
    shape = answer_shape(params, policy, settings)
    entry = await answers.lookup(params.collection, params.question, shape)
    if entry is not None:
        metrics.cache_result("answer", entry.value is not None)
        if entry.value is not None:
            return answers.respond(entry.value, request_id)
    outcome = await services.pipeline.run(params, policy, request_id)
    response = respond(outcome, request_id, metrics)
    await answers.put(entry, response.model_dump_json(exclude={"request_id", "cached"}).encode())
    return response


async def query(
    body: QueryRequest,
    streamed: bool,
    request_id: str,
    services: Services,
    settings: Settings,
    answers: AnswerCache,
    metrics: Metrics,
    principal: Principal,
) -> bytes | QueryResponse | AsyncIterator[bytes]:
    """A cited answer (cached JSON bytes, or a new one), or with ``streamed`` its SSE frames."""
    params = to_params(body, settings)
    principal.check(params.collection)
    if streamed:
        stream = await QueryStream.start(services.pipeline, params, request_id)
        return _frames(stream, request_id, metrics)
    return await answer(params, request_id, services, settings, answers, metrics)


async def _frames(stream: QueryStream, request_id: str, metrics: Metrics) -> AsyncIterator[bytes]:
    """covrag's SSE events: ``token``… ``round``… ``citations``, ``done`` (or ``error``)."""
    async for item in stream.events():
        for name, payload in _sse_events(item, request_id, metrics):
            yield format_sse_event(event=name, data_str=json.dumps(payload))


def _sse_events(item: StreamItem, request_id: str, metrics: Metrics) -> list[tuple[str, Any]]:
    if isinstance(item, AnswerText):
        return [("token", TokenEvent(round=item.round, text=item.text).model_dump(mode="json"))]
    if isinstance(item, Round):
        return [("round", to_round_out(item).model_dump(mode="json"))]
    if isinstance(item, Failed):
        _, body = classify(item.error)
        return [("error", ErrorOut(error=body, request_id=request_id).model_dump(mode="json"))]
    response = respond(item, request_id, metrics)
    citations = [c.model_dump(mode="json") for c in response.citations]
    return [("citations", citations), ("done", response.model_dump(mode="json"))]
