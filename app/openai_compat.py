"""The OpenAI chat-completions wire format over covrag's query (``/v1/chat/completions``).

So the official ``openai`` client, and every tool built on it, can use covrag as a model. The
model name picks the collection (``covrag`` = the default one, ``covrag/<collection>``); the last
user message is the question and earlier turns help rewrite it into a standalone one. Sources
are listed as numbered lines after the answer, and the full covrag response (citations,
rounds, the conformal guarantee) rides along in the extra field ``covrag``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas import JsonInt, MaxRounds, QueryResponse, TopK

#: Served model names: the default collection, and ``covrag/<collection>``.
MODEL_PREFIX = "covrag"


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True)

    type: str
    text: str = ""


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # name, tool_call_id …: unused

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content if p.type == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    """The fields covrag reads; OpenAI sampling options it does not use are accepted and
    ignored (the server's settings own the generator), so stock clients work unchanged."""

    model_config = ConfigDict(
        extra="ignore",
        strict=True,  # typed as the schema states: `"stream": 0` is no boolean
        json_schema_extra={
            "examples": [
                {
                    "model": MODEL_PREFIX,
                    "messages": [
                        {"role": "user", "content": "When was the Hubble Space Telescope launched?"}
                    ],
                }
            ]
        },
    )

    model: str = Field(description="`covrag` (default collection) or `covrag/<collection>`.")
    messages: list[ChatMessage] = Field(
        min_length=1,
        max_length=64,
        description="The last user or assistant message is the question: the user's, not blank.",
    )
    stream: bool = False
    n: JsonInt = Field(1, ge=1, le=1, description="One choice only.")
    # covrag's own knobs (the openai client sends them with extra_body=)
    alpha: float | None = Field(None, gt=0, lt=1)
    top_k: TopK | None = None
    max_rounds: MaxRounds | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "covrag"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    covrag: QueryResponse = Field(description="covrag's full answer: citations, rounds, α…")


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
