"""``POST /v1/retrieve``'s handler: the query's parameters (resolved as ``/v1/query`` resolves
them), then the pipeline's retrieval step alone."""

from __future__ import annotations

from app.api.query.protocol import QueryRequest
from app.api.query.serving import to_params
from app.api.retrieve.protocol import RetrieveResponse, to_retrieve_response
from app.config import Settings
from app.services import Services
from app.state.auth import Principal


async def retrieve(
    body: QueryRequest,
    request_id: str,
    services: Services,
    settings: Settings,
    principal: Principal,
) -> RetrieveResponse:
    params = to_params(body, settings)
    principal.check(params.collection)
    retrieval = await services.pipeline.retrieve(params)
    return to_retrieve_response(retrieval, request_id)
