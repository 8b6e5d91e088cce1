"""The OpenAI-compatible façade over covrag's query, so the official ``openai`` client, and
every tool built on it, can use covrag as a model.

The model name picks the collection (``covrag`` = the default one, ``covrag/<collection>``);
the last user message is the question and earlier turns help rewrite it into a standalone one.
Sources are listed as numbered lines after the answer. Not streamed, answers come from (and go
to) the answer cache ``/v1/query`` uses (``app.api.query.serving``).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio

from app.api.errors import classify
from app.api.openai.protocol import (
    MODEL_PREFIX,
    AssistantMessage,
    ChatCompletion,
    ChatRequest,
    Choice,
    ModelCard,
    ModelList,
    Usage,
)
from app.api.protocol import ErrorOut
from app.api.query.protocol import QueryResponse
from app.api.query.serving import answer, respond
from app.api.streaming import Failed, QueryStream
from app.config import Settings
from app.core.types import InvalidQuery, QueryOutcome, QueryParams, Round
from app.services import Services
from app.state.auth import Principal
from app.state.cache import AnswerCache
from app.telemetry.metrics import Metrics
from retrieval.errors import CollectionNotFound


def collection_of(model: str, default: str) -> str | None:
    """The collection a model name asks for; None when it is not one of ours."""
    if model == MODEL_PREFIX:
        return default
    prefix = MODEL_PREFIX + "/"
    return model[len(prefix) :] or None if model.startswith(prefix) else None


def sources_text(response: QueryResponse) -> str:
    """One numbered line per document the answer was taken from (with the page of its first
    cited passage, where the source has pages); none when no passage holds the answer (a list
    of everything retrieved would claim support that is not there)."""
    if response.abstained:
        return ""
    lines: dict[str, str] = {}
    for c in response.citations:
        if c.cited and c.doc_id not in lines:
            page = "" if c.page is None else f", page {c.page}"
            lines[c.doc_id] = f"[{c.n}] {c.title} ({c.doc_id}{page})"
    return "\n\nSources:\n" + "\n".join(lines.values()) if lines else ""


def completion_of(response: QueryResponse, model: str) -> ChatCompletion:
    """``usage`` is what this request spent: nothing for a cached answer (``covrag.usage``
    keeps what it cost when it was made)."""
    spent = (
        (0, 0)
        if response.cached
        else (response.usage.prompt_tokens, response.usage.completion_tokens)
    )
    usage = Usage(prompt_tokens=spent[0], completion_tokens=spent[1], total_tokens=sum(spent))
    return ChatCompletion(
        id=f"chatcmpl-{response.request_id}",
        created=int(time.time()),
        model=model,
        choices=[
            Choice(message=AssistantMessage(content=response.answer + sources_text(response)))
        ],
        usage=usage,
        covrag=response,
    )


def chunk(
    request_id: str,
    model: str,
    delta: dict[str, str],
    finish: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``."""
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **(extra or {}),
    }


async def list_models(services: Services, principal: Principal) -> ModelList:
    names = await anyio.to_thread.run_sync(services.store.list_collections)
    cards = [ModelCard(id=MODEL_PREFIX)]
    cards += [ModelCard(id=f"{MODEL_PREFIX}/{c.name}") for c in names if principal.allows(c.name)]
    return ModelList(data=cards)


def to_params(body: ChatRequest, settings: Settings) -> QueryParams:
    collection = collection_of(body.model, settings.collections.default)
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
        group=body.group,
        search=body.search or settings.limits.default_search,
        rerank=settings.reranker.default if body.rerank is None else body.rerank,
        history=tuple(turns[:-1]),
    )


async def chat_completions(
    body: ChatRequest,
    request_id: str,
    services: Services,
    settings: Settings,
    answers: AnswerCache,
    metrics: Metrics,
    principal: Principal,
) -> ChatCompletion | AsyncIterator[bytes]:
    """The completion, or with ``stream`` its ``chat.completion.chunk`` SSE frames."""
    params = to_params(body, settings)
    principal.check(params.collection, "model")
    if not body.stream:
        found = await answer(params, request_id, services, settings, answers, metrics)
        if isinstance(found, bytes):
            found = QueryResponse.model_validate_json(found)
        return completion_of(found, body.model)
    stream = await QueryStream.start(services.pipeline, params, request_id)
    return _frames(stream, request_id, body.model, metrics)


async def _frames(
    stream: QueryStream, request_id: str, model: str, metrics: Metrics
) -> AsyncIterator[bytes]:
    def data(payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload)}\n\n".encode()

    yield data(chunk(request_id, model, {"role": "assistant", "content": ""}))
    sent = False
    async for item in stream.events():
        text = ""
        # A round's answer goes out once it stands: the reply as decoded still holds what
        # the answer is cut from (a restated question, later sentences).
        if isinstance(item, Round) and item.decision == "accept":
            text = item.reasoning.answer
        elif isinstance(item, QueryOutcome):
            response = respond(item, request_id, metrics)
            text = ("" if sent else response.answer) + sources_text(response)
            extra = {"covrag": response.model_dump(mode="json")}
            if text:
                yield data(chunk(request_id, model, {"content": text}))
            yield data(chunk(request_id, model, {}, "stop", extra))
            continue
        elif isinstance(item, Failed):
            _, error = classify(item.error)
            yield data(ErrorOut(error=error, request_id=request_id).model_dump(mode="json"))
        if text:
            sent = True
            yield data(chunk(request_id, model, {"content": text}))
    yield b"data: [DONE]\n\n"
