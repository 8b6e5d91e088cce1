"""``POST /v1/retrieve``: the conformal filter alone, for clients that bring their own LLM."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import PrincipalDep, RequestIdDep, ServicesDep, SettingsDep
from app.api.protocol import QUERY_ERRORS
from app.api.query.protocol import QueryRequest
from app.api.retrieve import serving
from app.api.retrieve.protocol import RetrieveResponse

router = APIRouter(tags=["query"])


@router.post("/v1/retrieve", response_model=RetrieveResponse, responses=QUERY_ERRORS)
async def retrieve(
    body: QueryRequest,
    services: ServicesDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
    principal: PrincipalDep,
) -> RetrieveResponse:
    return await serving.retrieve(body, request_id, services, settings, principal)
