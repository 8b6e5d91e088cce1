"""``POST /v1/retrieve``: the conformal filter alone, for clients that bring their own LLM."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import PipelineDep, PrincipalDep, RequestIdDep, SettingsDep
from app.api.routes.query import ERRORS, to_params
from app.schemas import QueryRequest, RetrieveResponse, to_retrieve_response

router = APIRouter(tags=["query"])


@router.post("/v1/retrieve", response_model=RetrieveResponse, responses=ERRORS)
async def retrieve(
    body: QueryRequest,
    pipeline: PipelineDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
    principal: PrincipalDep,
) -> RetrieveResponse:
    params = to_params(body, settings)
    principal.check(params.collection)
    retrieval = await pipeline.retrieve(params)
    return to_retrieve_response(retrieval, request_id)
