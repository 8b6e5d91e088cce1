"""``POST /v1/query`` wire models: the request (also ``/v1/retrieve``'s), the answer, its
rounds, and the streamed events."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from app.api.protocol import (
    CitationOut,
    CollectionName,
    ErrorOut,
    GroupName,
    MaxRounds,
    NotBlank,
    RetrievalFields,
    Strict,
    TimingsOut,
    TopK,
    component,
    integral,
    retrieval_fields,
    sse_event,
)
from app.core.types import QueryOutcome, Round
from retrieval.filters import payload_key
from retrieval.hybrid import SearchMode
from retrieval.types import FilterScalar, FilterValue

#: What the stores can filter on: dotted paths of plain names; integers that JSON carries
#: exactly (|n| < 2**53), well inside the stores' 64 bits.
FilterKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")]
_FILTER_INT = 2**53 - 1
_FILTER_SCALARS: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "integer", "minimum": -_FILTER_INT, "maximum": _FILTER_INT},
    {"type": "boolean"},
]


def _filter_scalar(value: object) -> FilterScalar:
    value = integral(value)
    if isinstance(value, str | bool) or (isinstance(value, int) and abs(value) <= _FILTER_INT):
        return value
    raise PydanticCustomError(
        "filter_value",
        "expected a string, an integer within ±(2^53 - 1), a boolean, or a non-empty list of "
        "them (matching any), got {got}",
        {"got": json.dumps(value)[:80]},
    )


def _filter_value(value: object) -> FilterValue:
    """One checked filter value, so that a bad one is one error naming its key (a union type
    would give one per member)."""
    if not isinstance(value, list):
        return _filter_scalar(value)
    if not value:
        raise PydanticCustomError("filter_value", "an empty list matches nothing")
    return [_filter_scalar(v) for v in value]


def _payload_filters(filters: dict[str, FilterValue]) -> dict[str, FilterValue]:
    """The filters keyed by the payload paths they match (``retrieval.filters``)."""
    keys = {key: payload_key(key) for key in filters}
    paths = {path: key for key, path in keys.items()}
    for key, path in keys.items():
        if paths[path] != key:
            raise PydanticCustomError(
                "filter_key",
                "{key} and {other} both name {path}: give it once",
                {"key": key, "other": paths[path], "path": path},
            )
    return {keys[key]: value for key, value in filters.items()}


FilterValueIn = Annotated[
    Any,
    AfterValidator(_filter_value),
    WithJsonSchema(
        {
            "anyOf": [
                *_FILTER_SCALARS,
                {"type": "array", "minItems": 1, "items": {"anyOf": _FILTER_SCALARS}},
            ]
        }
    ),
]


class QueryRequest(Strict):
    """``POST /v1/query``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"question": "When was the Hubble Space Telescope launched?"},
                {"question": "How high is Mount Everest?", "stream": True},
            ]
        }
    )

    question: NotBlank = Field(
        description="The question; 1 to COVRAG_MAX_QUESTION_CHARS characters, not all blank."
    )
    collection: CollectionName | None = Field(
        None, description="Collection to search; default COVRAG_DEFAULT_COLLECTION."
    )
    top_k: TopK | None = Field(
        None,
        description="Context budget in chunks; default COVRAG_MAX_CHUNKS for a calibrated "
        "collection, COVRAG_DEFAULT_TOP_K otherwise.",
    )
    filters: Annotated[dict[FilterKey, FilterValueIn], AfterValidator(_payload_filters)] = Field(
        default_factory=dict,
        description="Exact matches, all required; a list matches any of its values. Keys "
        "doc_id, title, source and chunk_index are covrag's own fields; any other key is a "
        'metadata key given at ingestion ({"department": ["IT", "HR"]} matches '
        "metadata.department), also written metadata.<key>; dotted keys reach into nested "
        "metadata.",
        json_schema_extra={"additionalProperties": False},  # keys only as ``FilterKey`` allows
    )
    alpha: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Conformal miss rate: the answer-bearing chunk is kept with probability "
        ">= 1-alpha. Default: the collection's calibration default; 409 if uncalibrated.",
    )
    max_rounds: MaxRounds | None = Field(
        None, description="Retrieval rounds; default COVRAG_MAX_ROUNDS."
    )
    search: SearchMode | None = Field(
        None,
        description="dense: the embeddings; hybrid: also BM25 keywords (a rare exact name or "
        "code dense search ranks low), fused by rank; the chunks that cleared the conformal "
        "threshold all stay, so the guarantee is the same. 409 for a collection created "
        "before keyword vectors. Default COVRAG_SEARCH.",
    )
    rerank: bool | None = Field(
        None,
        description="Order the top dense candidates (COVRAG_RERANK_CANDIDATES; with hybrid "
        "search, the keyword hits too) by the trained cross-encoder reranker, and threshold "
        "its relevance: the calibration holds the reranker's scores of its questions, so the "
        "guarantee is on the reranked set. 409 when no reranker is trained or the calibration "
        "was taken without it. Default COVRAG_RERANK.",
    )
    group: GroupName | None = Field(
        None,
        description="Calibration group (tenant, source, product) whose own threshold applies; "
        "calibration QA pairs carry it as `group`. Default: the question's kind (single, "
        "bridge, comparison). Too few of the group's questions for alpha: the pooled "
        "threshold applies and coverage is not guaranteed.",
    )
    stream: bool = Field(
        False,
        description="Answer as server-sent events (also chosen by `Accept: text/event-stream`): "
        "`token`, `round`, `citations`, `done` (this same response), `error`.",
    )


class QueryTimingsOut(TimingsOut):
    """Summed over rounds; ``generate`` is every LLM call (answers and query rewrites)."""

    generate: float
    critic: float


class UsageOut(BaseModel):
    """Generator tokens over every LLM call of the query."""

    prompt_tokens: int
    completion_tokens: int


class RoundOut(BaseModel):
    """One retrieval round of the SIM-RAG loop."""

    index: int
    query: str = Field(description="What was searched: the question, then rewritten queries.")
    chunks_added: list[str] = Field(description="Ids of chunks this round added to the context.")
    chunks_evicted: list[str] = Field(
        description="Ids of earlier chunks a later round's hits displaced (prompt budget)."
    )
    answer: str = Field(
        description="The reasoner's answer from the context so far. A later round that added "
        "and evicted nothing keeps the previous round's answer without asking the LLM again "
        "(the same prompt; at temperature 0 the same reply): its timings have no `reason`."
    )
    query_from: str = Field(
        description="question; link (a document the context names by title, searched with the "
        "question); or model (the LLM's rewrite)"
    )
    truncated: bool = Field(
        description="The reply ran into the token budget; the answer was cut back to a whole word."
    )
    critic_score: float | None = Field(description="P(sufficient); null without a critic.")
    decision: str = Field(description="accept, search_again, abstain (or continue: self-practice)")
    timings_ms: dict[str, float]


class CandidateOut(BaseModel):
    """The best answer of an abstained query, with its critic score."""

    answer: str
    critic_score: float | None
    round: int


class QueryResponse(RetrievalFields):
    """``POST /v1/query`` answer."""

    answer: str
    sufficient: bool = Field(
        description="The critic accepted (or, without one, passages were found and the model "
        "did not refuse)."
    )
    abstained: bool = Field(description="No round's evidence sufficed: the answer is a refusal.")
    candidate: CandidateOut | None = Field(description="Best rejected answer when abstaining.")
    rounds: list[RoundOut]
    critic: str | None = Field(description="The critic that judged the rounds; null = none.")
    tau: float | None = Field(description="A round is accepted when its critic score >= tau.")
    llm_calls: int
    usage: UsageOut
    warnings: list[str]
    model: str
    timings_ms: QueryTimingsOut
    cached: bool = Field(
        False,
        description="Served from the answer cache (same question, collection unchanged); "
        "timings and usage are those of the original run.",
    )


class TokenEvent(BaseModel):
    """SSE ``token``: a piece of round ``round``'s answer as vLLM decodes it. A later round
    event says whether that round's answer stands; ``done`` carries the final one."""

    round: int
    text: str


def to_round_out(r: Round) -> RoundOut:
    return RoundOut(
        index=r.index,
        query=r.query,
        chunks_added=r.added,
        chunks_evicted=r.evicted,
        answer=r.reasoning.answer,
        query_from=r.query_from,
        truncated=r.reasoning.truncated,
        critic_score=r.critic_score,
        decision=r.decision,
        timings_ms=r.timings_ms,
    )


def to_query_response(outcome: QueryOutcome, request_id: str) -> QueryResponse:
    candidate = outcome.candidate
    return QueryResponse(
        **retrieval_fields(outcome.retrieval, outcome.citations, outcome.timings_ms, request_id),
        answer=outcome.answer,
        sufficient=outcome.sufficient,
        abstained=outcome.abstained,
        candidate=None
        if candidate is None
        else CandidateOut(
            answer=candidate.reasoning.answer,
            critic_score=candidate.critic_score,
            round=candidate.index,
        ),
        rounds=[to_round_out(r) for r in outcome.rounds],
        critic=outcome.critic,
        tau=outcome.tau,
        llm_calls=outcome.llm_calls,
        usage=UsageOut(
            prompt_tokens=outcome.usage.prompt, completion_tokens=outcome.usage.completion
        ),
        warnings=outcome.warnings,
        model=outcome.model,
    )


SSE_DOC = {
    "description": "The answer; with `stream` (or `Accept: text/event-stream`) a stream of "
    "server-sent events: `token`, `round`, `citations`, `done`, `error`.",
    "content": {
        "text/event-stream": {
            "schema": {
                "oneOf": [
                    sse_event(TokenEvent.model_json_schema(), "token"),
                    sse_event(component(RoundOut), "round"),
                    sse_event({"type": "array", "items": component(CitationOut)}, "citations"),
                    sse_event(component(QueryResponse), "done"),
                    sse_event(component(ErrorOut), "error"),
                ]
            }
        }
    },
}
