"""Cache hits of ``POST /v1/query``, answered below the router.

A hit needs a key check, a rate-limit token and a cache lookup (one Redis call for both),
and the stored bytes sent back. Through FastAPI, routing, dependency solving and response
building cost about twice that (py-spy under wrk: ~60 % of the process's time was the router
and below). So the request middleware offers every checked query body here first. Anything
but a clean hit — a body the route would refuse, streaming, a missing or bad key, a forbidden
collection, the rate limit, a cache miss or error — goes on to the route, which answers it as
it always has. A key charged (or refused by its rate limit) here is not asked about twice:
``authorize`` takes the decision from the request state.
"""

from __future__ import annotations

from fastapi.routing import RouteContext, iter_route_contexts
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import ValidationError
from starlette.datastructures import State
from starlette.types import Receive, Scope, Send

from app.api.deps import ADMITTED, LIMITED
from app.api.guard import Replayed
from app.api.query.protocol import QueryRequest
from app.api.query.serving import answer_shape, to_params
from app.state.auth import AuthError, Principal, RateLimited

PATH = "/v1/query"


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key as ``HTTPBearer`` then ``X-API-Key`` would read it."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    if authorization and scheme.lower() == "bearer" and credentials:
        return credentials
    return api_key or None


class CachedQueries:
    """``serve`` answers a cache hit and says so; see the module docstring."""

    def __init__(self) -> None:
        self._route: RouteContext | None = None

    async def serve(self, scope: Scope, receive: Receive | Replayed, send: Send) -> bool:
        """True when ``send`` has answered the request from the answer cache."""
        if scope["path"] != PATH or scope["method"] != "POST" or not isinstance(receive, Replayed):
            return False
        state: State = scope["app"].state
        if not getattr(state, "answers", None) or not state.answers.enabled:
            return False  # before the lifespan ran, or with the cache off
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)  # the first of a repeated header, as Starlette reads
        if b"text/event-stream" in headers.get(b"accept", b""):
            return False
        try:
            body = QueryRequest.model_validate_json(receive.body)
        except ValidationError:
            return False
        params = to_params(body, state.settings)
        principal = self._principal(state, headers)
        if body.stream or principal is None or not principal.allows(params.collection):
            return False
        policy = state.services.pipeline.default_policy(params)
        shape = answer_shape(params, policy, state.settings)
        try:  # the key's rate-limit token and the lookup: one Redis call
            entry = await state.answers.lookup(
                params.collection, params.question, shape, principal.bucket
            )
        except RateLimited as limited:
            scope["state"][LIMITED] = limited  # the route's 429, without asking Redis again
            return False
        if entry is None:  # the cache is down: the route's limiter applies its Redis policy
            return False
        scope["state"][ADMITTED] = principal  # charged: a miss is not charged again
        if entry.value is None:
            return False
        state.metrics.cache_result("answer", True)
        payload = state.answers.respond(entry.value, scope["state"]["request_id"])
        scope["route"] = self._query_route(scope)  # labels the request's metrics
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        return True

    @staticmethod
    def _principal(state: State, headers: dict[bytes, bytes]) -> Principal | None:
        """The key's holder, or None for the route to refuse (401)."""
        authorization = headers.get(b"authorization")
        api_key = headers.get(b"x-api-key")
        key = presented_key(
            authorization.decode("latin-1") if authorization else None,
            api_key.decode("latin-1") if api_key else None,
        )
        try:
            return state.gate.keys.identify(key)
        except AuthError:
            return None

    def _query_route(self, scope: Scope) -> RouteContext | None:
        if self._route is None:
            routes = iter_route_contexts(scope["app"].routes)  # as the middleware finds routes
            self._route = next((r for r in routes if r.path_format == PATH), None)
        return self._route
