"""Dependencies routes declare; everything comes from ``app.state``, built in the lifespan.

All ``async def``: FastAPI runs a sync dependency in its thread pool, a thread hop per
dependency per request that the cached-answer path cannot afford.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.config import Settings
from app.services import Services
from app.state.auth import Gate, Principal, RateLimited
from app.state.cache import AnswerCache
from app.state.catalog import Catalog
from app.state.jobs import JobRegistry
from app.telemetry.metrics import Metrics


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _catalog(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.catalog
    return catalog


async def _jobs(request: Request) -> JobRegistry:
    jobs: JobRegistry = request.app.state.jobs
    return jobs


async def _answers(request: Request) -> AnswerCache:
    answers: AnswerCache = request.app.state.answers
    return answers


#: Where a principal the cached-answer path (``app.api.fastpath``) admitted waits for
#: ``authorize``, when the route answers after all.
ADMITTED = "principal"
#: Where that path leaves a rate-limit refusal: the route answers 429 on it, not on a second
#: call to the limiter.
LIMITED = "rate_limited"

#: The two ways to present a key; declared so the OpenAPI schema documents them.
_BEARER = HTTPBearer(auto_error=False, description="An API key as a bearer token.")
_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="Or in X-API-Key.")


async def authorize(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    header: Annotated[str | None, Security(_HEADER)],
) -> Principal:
    """The caller's key, admitted by the rate limiter; every /v1 router depends on it and
    FastAPI resolves it once per request."""
    admitted: Principal | None = getattr(request.state, ADMITTED, None)
    if admitted is not None:  # the cached-answer path admitted (and charged) it already
        return admitted
    limited: RateLimited | None = getattr(request.state, LIMITED, None)
    if limited is not None:  # ... or found its bucket empty
        raise limited
    gate: Gate = request.app.state.gate
    return await gate.admit(bearer.credentials if bearer else header)


async def _request_id(request: Request) -> str:
    request_id: str = request.state.request_id
    return request_id


async def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(_settings)]
ServicesDep = Annotated[Services, Depends(_services)]
RequestIdDep = Annotated[str, Depends(_request_id)]
CatalogDep = Annotated[Catalog, Depends(_catalog)]
JobsDep = Annotated[JobRegistry, Depends(_jobs)]
AnswersDep = Annotated[AnswerCache, Depends(_answers)]
PrincipalDep = Annotated[Principal, Depends(authorize)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
