"""Wire models and field types several endpoint families share: the strict request base, the
checked field types, the conformal filter's report (``/v1/query`` and ``/v1/retrieve``), the
error envelope and the OpenAPI tables that document it.

Each family's own models sit in its ``protocol.py``; converters from the core's dataclasses sit
next to the models they build, so routes stay one call deep.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from app.core.types import Citation
from retrieval.errors import InvalidCollectionName
from retrieval.store.base import COLLECTION_NAME, check_name
from retrieval.types import Retrieval


class Strict(BaseModel):
    """A request body taken as its schema states it: no unknown fields, no coercion (``0`` is
    not ``false``, ``"5"`` not ``5``)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def integral(value: object) -> object:
    """``94.0`` as ``94``: JSON Schema counts it an integer, strict ``int`` refuses floats."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _collection_name(name: str) -> str:
    try:
        return check_name(name)
    except InvalidCollectionName as exc:
        raise ValueError(str(exc)) from None


#: An integer as JSON Schema counts them: ``94.0`` too (strict ``int`` refuses any float),
#: never ``"94"`` or ``true``. Bounds go before the validator, or the schema loses them.
JsonInt = Annotated[int, BeforeValidator(integral)]
TopK = Annotated[int, Field(ge=1, le=100), BeforeValidator(integral)]
MaxRounds = Annotated[int, Field(ge=1, le=5), BeforeValidator(integral)]

# Checked with the core's own rule (and its message), announced in the schema as a pattern: a
# client learns from the schema what the server refuses.
NotBlank = Annotated[str, AfterValidator(_not_blank), Field(json_schema_extra={"pattern": r"\S"})]
CollectionName = Annotated[
    str,
    AfterValidator(_collection_name),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": COLLECTION_NAME.pattern,
            "description": "1-64 letters, digits, '_' or '-', starting with a letter or digit.",
        }
    ),
]
#: A caller's calibration group (tenant, source, product): 1-64 letters, digits, '_', '-', '.'.
GroupName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


# --- the conformal filter's report ------------------------------------------------------
class CitationOut(BaseModel):
    """A passage given to the generator, numbered as in the prompt."""

    n: int = Field(description="The passage's number in the prompt; the answer cites it as [n].")
    cited: bool = Field(
        description="Whether the answer was taken from this passage (it holds the answer)."
    )
    chunk_id: str
    doc_id: str
    title: str
    text: str
    score: float = Field(description="Cosine similarity to the question.")
    relevance: float | None = Field(
        None,
        description="The chunk's score on the threshold's scale when it is not the cosine: "
        "its relative share, or the reranker's relevance, in [0, 1].",
    )
    source: str | None = Field(
        None, description="Where the document came from: the file name of an uploaded file."
    )
    page: int | None = Field(
        None, description="The page the passage is on (1 = first), where the source has pages."
    )


class TimingsOut(BaseModel):
    """Milliseconds per stage; ``filter`` is threshold lookup, ``generate`` the LLM call."""

    filter: float
    embed: float
    search: float
    rerank: float | None = Field(None, description="The reranker (reranked requests only).")
    total: float


class CalibrationRefOut(BaseModel):
    n: int = Field(description="The calibration's questions (`group_n`: its group's, on `scale`).")
    version: int
    stale: bool = Field(
        description="The collection changed too much, or was indexed, since: no guarantee."
    )
    group: str = Field(
        description="Whose threshold applied: `kind:single`, `kind:bridge`, `kind:comparison` "
        "(the question's kind) or `group:<name>` (the request's `group`)."
    )
    group_n: int = Field(description="The group's calibration questions.")
    fallback: bool = Field(
        description="Too few of the group's questions for alpha (or too many missed): the "
        "pooled threshold applied, and coverage is not guaranteed."
    )
    groups: list[str] = Field(
        description="Every group the question counts in, the largest of whose thresholds "
        "applied: the kinds it may be (a conformal set, most likely first), or the request's "
        "`group`. With `kind:bridge` among them the question may be multi-hop: the context "
        "then also holds the documents its passages name (`links`), and "
        "`coverage_guaranteed` is true only when that many are calibrated."
    )
    links: int | None = Field(
        None,
        description="A question that may be multi-hop: how many documents named by its top "
        "passages the context adds, calibrated so that it holds the last hop with probability "
        "≥ 1−alpha; null when none are calibrated for it (no guarantee).",
    )
    scale: Literal["cosine", "relative", "rerank"] = Field(
        "cosine",
        description="What `threshold` is on: the cosine similarity, a chunk's share of the "
        "question's top dense hits (`relative`, COVRAG_CONFORMAL_SCORE), or the reranker's "
        "relevance (`rerank`).",
    )


class EvidenceOut(BaseModel):
    passed: int = Field(description="Chunks given to the generator.")
    budget: int = Field(description="Context budget in chunks.")
    budget_cut: bool = Field(description="The budget cut off chunks that cleared the threshold.")
    none_cleared: bool = Field(
        description="No chunk cleared the threshold: no evidence (a hybrid search may still "
        "pass keyword hits)."
    )
    filter_matched_nothing: bool = Field(
        description="`filters` were given and no chunk of the collection matches them, so "
        "nothing was searched (as opposed to nothing similar enough)."
    )


class RetrievalFields(BaseModel):
    """The conformal filter's report, shared by /v1/query and /v1/retrieve."""

    citations: list[CitationOut]
    alpha: float | None = Field(
        description="Miss rate applied; null for an uncalibrated collection."
    )
    threshold: float | None = Field(
        description="The score a chunk had to reach, on `calibration.scale`: cosine, relative "
        "share, or reranker relevance; null = none."
    )
    coverage_target: float | None = Field(description="1 - alpha.")
    coverage_guaranteed: bool = Field(
        description="The question's own group had a finite, fresh threshold at alpha (no "
        "fallback) and the budget cut nothing above it."
    )
    calibration: CalibrationRefOut | None
    evidence: EvidenceOut
    timings_ms: TimingsOut
    request_id: str


def retrieval_fields(
    retrieval: Retrieval, citations: list[Citation], timings: dict[str, float], request_id: str
) -> dict[str, Any]:
    """The ``RetrievalFields`` of a response, as keyword arguments of its model."""
    cal = retrieval.calibration
    return {
        "citations": [
            CitationOut(
                n=c.n,
                cited=c.cited,
                chunk_id=c.chunk.id,
                doc_id=c.chunk.doc_id,
                title=c.chunk.title,
                text=c.chunk.text,
                score=c.chunk.score,
                relevance=c.chunk.relevance,
                source=c.chunk.source,
                page=c.chunk.page,
            )
            for c in citations
        ],
        "alpha": retrieval.alpha,
        "threshold": retrieval.threshold,
        "coverage_target": retrieval.coverage_target,
        "coverage_guaranteed": retrieval.coverage_guaranteed,
        "calibration": None
        if cal is None
        else CalibrationRefOut(
            n=cal.n,
            version=cal.version,
            stale=cal.stale,
            group=cal.group,
            group_n=cal.group_n,
            fallback=cal.fallback,
            groups=list(cal.groups),
            links=cal.links,
            scale=cal.scale,
        ),
        "evidence": EvidenceOut(
            passed=len(retrieval.hits),
            budget=retrieval.budget,
            budget_cut=retrieval.budget_cut,
            none_cleared=retrieval.none_cleared,
            filter_matched_nothing=retrieval.filter_matched_nothing,
        ),
        "timings_ms": timings,
        "request_id": request_id,
    }


# --- errors -----------------------------------------------------------------------------
class ErrorBody(BaseModel):
    type: str
    message: str
    param: str | None = None


class ErrorOut(BaseModel):
    """The one error envelope of every non-2xx response."""

    error: ErrorBody
    request_id: str | None = None


#: A route's ``responses=``: the statuses it may answer with the error envelope.
Responses = dict[int | str, dict[str, Any]]


def error_responses(*codes: int) -> Responses:
    return {code: {"model": ErrorOut} for code in codes}


#: What the body guard (``app.api.guard``) may answer instead of a route, for the
#: ``responses=`` of every route that takes a body: the schema then lists each status a
#: client can get.
GUARD_ERRORS = error_responses(400, 413, 415)
#: What a route on one collection may answer besides its result.
COLLECTION_ERRORS = error_responses(400, 401, 403, 404, 409, 422, 429, 503)
#: What a question (``/v1/query``, ``/v1/retrieve``, ``/v1/chat/completions``) may answer.
QUERY_ERRORS = {**error_responses(401, 403, 404, 409, 422, 429, 502, 503, 504), **GUARD_ERRORS}


# --- streamed bodies --------------------------------------------------------------------
#: Proxies must not buffer or cache an event stream.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def component(model: type[BaseModel]) -> dict[str, str]:
    """A reference to ``model``'s schema among the OpenAPI components (FastAPI names them by
    class; the model must be some route's request or response)."""
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def sse_event(data: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The schema of one server-sent event (before OpenAPI 3.2 the ``text/event-stream``
    schema describes each event) named ``name``, whose ``data`` is JSON matching ``data``."""
    fields: dict[str, Any] = {
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data}
    }
    if name is not None:
        fields["event"] = {"const": name}
    return {"type": "object", "required": list(fields), "properties": fields}
