"""The OpenAI chat-completions wire format (``/v1/models``, ``/v1/chat/completions``): the
fields covrag reads of a request, and the completion it answers with. The full covrag
response rides along in the extra field ``covrag``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.protocol import (
    ErrorOut,
    GroupName,
    JsonInt,
    MaxRounds,
    TopK,
    component,
    sse_event,
)
from app.api.query.protocol import QueryResponse
from retrieval.hybrid import SearchMode

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
    group: GroupName | None = Field(
        None, description="Calibration group whose own threshold applies, as in /v1/query."
    )
    search: SearchMode | None = Field(None, description="dense or hybrid, as in /v1/query.")
    rerank: bool | None = Field(None, description="Rerank the candidates, as in /v1/query.")


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


#: A streamed completion's events: chunks (the last one carries ``covrag``), an error if one
#: happens, then ``[DONE]``.
CHUNK = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "object": {"const": "chat.completion.chunk"},
        "covrag": component(QueryResponse),
    },
}
CHAT_SSE_DOC = {
    "description": "The completion; with `stream` a stream of `chat.completion.chunk` "
    "server-sent events, then `data: [DONE]`.",
    "content": {
        "text/event-stream": {
            "schema": {
                "anyOf": [
                    sse_event({"anyOf": [CHUNK, component(ErrorOut)]}),
                    {
                        "type": "object",
                        "required": ["data"],
                        "properties": {"data": {"const": "[DONE]"}},
                    },
                ]
            }
        }
    },
}
