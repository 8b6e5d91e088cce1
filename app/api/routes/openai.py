"""The OpenAI-compatible façade: ``GET /v1/models`` and ``POST /v1/chat/completions``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from app.api.deps import (
    AnswersDep,
    MetricsDep,
    PipelineDep,
    PrincipalDep,
    RequestIdDep,
    SettingsDep,
)
from app.api.errors import classify
from app.api.routes.query import ERRORS, SSE_HEADERS, answer
from app.api.streaming import Failed, QueryStream
from app.core.pipeline import InvalidQuery, QueryParams, Round
from app.openai_compat import (
    MODEL_PREFIX,
    ChatCompletion,
    ChatRequest,
    ModelCard,
    ModelList,
    chunk,
    collection_of,
    completion_of,
    sources_text,
)
from app.schemas import ErrorOut, QueryResponse, component, sse_event
from retrieval.errors import CollectionNotFound

router = APIRouter(tags=["openai"])

#: A streamed completion's events: chunks (the last one carries ``covrag``), an error if one
#: happens, then ``[DONE]``.
CHUNK = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "object": {"const": "chat.completion.chunk"},
        "covrag": component(QueryResponse),
    },
}
CHAT_SSE_DOC = {
    "description": "The completion; with `stream` a stream of `chat.completion.chunk` "
    "server-sent events, then `data: [DONE]`.",
    "content": {
        "text/event-stream": {
            "schema": {
                "anyOf": [
                    sse_event({"anyOf": [CHUNK, component(ErrorOut)]}),
                    {
                        "type": "object",
                        "required": ["data"],
                        "properties": {"data": {"const": "[DONE]"}},
                    },
                ]
            }
        }
    },
}


@router.get(
    "/v1/models",
    responses={code: {"model": ErrorOut} for code in (401, 429, 503)},
)
async def models(pipeline: PipelineDep, principal: PrincipalDep) -> ModelList:
    """``covrag`` (the default collection) and ``covrag/<collection>`` for each collection the
    caller's key may use."""
    names = await anyio.to_thread.run_sync(pipeline.store.list_collections)
    cards = [ModelCard(id=MODEL_PREFIX)]
    cards += [ModelCard(id=f"{MODEL_PREFIX}/{c.name}") for c in names if principal.allows(c.name)]
    return ModelList(data=cards)


def to_params(body: ChatRequest, default_collection: str) -> QueryParams:
    collection = collection_of(body.model, default_collection)
    if collection is None:
        raise CollectionNotFound(
            f"model {body.model!r} is not served here: use {MODEL_PREFIX!r} or "
            f"'{MODEL_PREFIX}/<collection>' (GET /v1/models lists them)"
        )
    turns = [(m.role, m.text()) for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1][0] != "user":
        raise InvalidQuery("the last message must be the user's question", "messages")
    return QueryParams(
        question=turns[-1][1],
        collection=collection,
        top_k=body.top_k,
        alpha=body.alpha,
        max_rounds=body.max_rounds,
        history=tuple(turns[:-1]),
    )


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={200: CHAT_SSE_DOC, **ERRORS},
)
async def chat_completions(
    body: ChatRequest,
    pipeline: PipelineDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
    metrics: MetricsDep,
    answers: AnswersDep,
    principal: PrincipalDep,
) -> Response | ChatCompletion:
    """The last user message is the question; earlier turns make it self-contained. Not
    streamed, answers come from (and go to) the answer cache ``/v1/query`` uses."""
    params = to_params(body, settings.collections.default)
    principal.check(params.collection, "model")
    if not body.stream:
        found = await answer(params, request_id, pipeline, settings, answers, metrics)
        if isinstance(found, bytes):
            found = QueryResponse.model_validate_json(found)
        return completion_of(found, body.model)
    stream = await QueryStream.start(pipeline, params, request_id)

    async def frames() -> AsyncIterator[bytes]:
        def data(payload: dict[str, Any]) -> bytes:
            return f"data: {json.dumps(payload)}\n\n".encode()

        yield data(chunk(request_id, body.model, {"role": "assistant", "content": ""}))
        sent = False
        async for item in stream.events():
            text = ""
            # A round's answer goes out once it stands: the reply as decoded still holds what
            # the answer is cut from (a restated question, later sentences).
            if isinstance(item, Round) and item.decision == "accept":
                text = item.reasoning.answer
            elif isinstance(item, QueryResponse):
                metrics.observe_query(item)
                text = ("" if sent else item.answer) + sources_text(item)
                extra = {"covrag": item.model_dump(mode="json")}
                if text:
                    yield data(chunk(request_id, body.model, {"content": text}))
                yield data(chunk(request_id, body.model, {}, "stop", extra))
                continue
            elif isinstance(item, Failed):
                _, error = classify(item.error)
                yield data(ErrorOut(error=error, request_id=request_id).model_dump(mode="json"))
            if text:
                sent = True
                yield data(chunk(request_id, body.model, {"content": text}))
        yield b"data: [DONE]\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)
