"""``POST /v1/query``: one question in, a cited answer out — as JSON, or streamed as SSE."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from app.api.deps import (
    AnswersDep,
    MetricsDep,
    PrincipalDep,
    RequestIdDep,
    ServicesDep,
    SettingsDep,
)
from app.api.protocol import QUERY_ERRORS, SSE_HEADERS
from app.api.query import serving
from app.api.query.protocol import SSE_DOC, QueryRequest, QueryResponse

router = APIRouter(tags=["query"])


@router.post(
    "/v1/query",
    response_model=QueryResponse,
    responses={200: SSE_DOC, **QUERY_ERRORS},
)
async def query(
    body: QueryRequest,
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
    metrics: MetricsDep,
    answers: AnswersDep,
    principal: PrincipalDep,
) -> Response | QueryResponse:
    """A cited answer — served from the answer cache when this exact question was answered on
    the collection as it is now."""
    streamed = body.stream or "text/event-stream" in request.headers.get("accept", "")
    found = await serving.query(
        body, streamed, request_id, services, settings, answers, metrics, principal
    )
    if isinstance(found, bytes):
        return Response(found, media_type="application/json")
    if isinstance(found, QueryResponse):
        return found
    return StreamingResponse(found, media_type="text/event-stream", headers=SSE_HEADERS)
