"""``POST /v1/query``: one question in, a cited answer out."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import PipelineDep, RequestIdDep, SettingsDep
from app.config import Settings
from app.pipeline import QueryParams
from app.schemas import ErrorOut, QueryRequest, QueryResponse, to_query_response

router = APIRouter(tags=["query"])

ERRORS = {code: {"model": ErrorOut} for code in (400, 404, 409, 422, 502, 503, 504)}


def to_params(body: QueryRequest, settings: Settings) -> QueryParams:
    return QueryParams(
        question=body.question,
        collection=body.collection or settings.default_collection,
        top_k=body.top_k,
        filters=body.filters,
        alpha=body.alpha,
        max_rounds=body.max_rounds,
    )


@router.post("/v1/query", response_model=QueryResponse, responses=ERRORS)  # type: ignore[arg-type]
async def query(
    body: QueryRequest, pipeline: PipelineDep, settings: SettingsDep, request_id: RequestIdDep
) -> QueryResponse:
    outcome = await pipeline.query(to_params(body, settings), request_id)
    return to_query_response(outcome, request_id)
