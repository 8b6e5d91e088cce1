"""The OpenAI-compatible façade: ``GET /v1/models`` and ``POST /v1/chat/completions``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from app.api.deps import (
    AnswersDep,
    MetricsDep,
    PrincipalDep,
    RequestIdDep,
    ServicesDep,
    SettingsDep,
)
from app.api.openai import serving
from app.api.openai.protocol import CHAT_SSE_DOC, ChatCompletion, ChatRequest, ModelList
from app.api.protocol import QUERY_ERRORS, SSE_HEADERS, error_responses

router = APIRouter(tags=["openai"])


@router.get("/v1/models", responses=error_responses(401, 429, 503))
async def models(services: ServicesDep, principal: PrincipalDep) -> ModelList:
    """``covrag`` (the default collection) and ``covrag/<collection>`` for each collection the
    caller's key may use."""
    return await serving.list_models(services, principal)


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={200: CHAT_SSE_DOC, **QUERY_ERRORS},
)
async def chat_completions(
    body: ChatRequest,
    services: ServicesDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
    metrics: MetricsDep,
    answers: AnswersDep,
    principal: PrincipalDep,
) -> Response | ChatCompletion:
    """The last user message is the question; earlier turns make it self-contained. Not
    streamed, answers come from (and go to) the answer cache ``/v1/query`` uses."""
    found = await serving.chat_completions(
        body, request_id, services, settings, answers, metrics, principal
    )
    if isinstance(found, ChatCompletion):
        return found
    return StreamingResponse(found, media_type="text/event-stream", headers=SSE_HEADERS)
