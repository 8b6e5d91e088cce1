"""Wire models: every request and response body, with field constraints on the fields.

Converted to and from the core's dataclasses by the ``to_*``/``from_*`` functions here, so
routes stay one call deep.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.core.pipeline import Citation, QueryOutcome, Round
from app.state.jobs import Job
from retrieval.calibration import KEPT_VERSIONS, CalibrationItem, KeptCalibrations, answer_docs
from retrieval.conformal import REPORTED_ALPHAS, Calibration, score_threshold
from retrieval.errors import InvalidCollectionName
from retrieval.filters import payload_key
from retrieval.ingest import IngestReport
from retrieval.retriever import Retrieval
from retrieval.store.base import COLLECTION_NAME, check_name
from retrieval.types import CollectionInfo, Document, DocumentPage, FilterScalar, FilterValue


class _Strict(BaseModel):
    """A request body taken as its schema states it: no unknown fields, no coercion (``0`` is
    not ``false``, ``"5"`` not ``5``)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _integral(value: object) -> object:
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
JsonInt = Annotated[int, BeforeValidator(_integral)]
TopK = Annotated[int, Field(ge=1, le=100), BeforeValidator(_integral)]
MaxRounds = Annotated[int, Field(ge=1, le=5), BeforeValidator(_integral)]
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
    value = _integral(value)
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


# --- query ------------------------------------------------------------------------------
class QueryRequest(_Strict):
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
    total: float


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


class CalibrationRefOut(BaseModel):
    n: int = Field(description="Calibration questions behind the threshold.")
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


class EvidenceOut(BaseModel):
    passed: int = Field(description="Chunks given to the generator.")
    budget: int = Field(description="Context budget in chunks.")
    budget_cut: bool = Field(description="The budget cut off chunks that cleared the threshold.")
    none_cleared: bool = Field(description="No chunk cleared the threshold: no evidence.")
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
    threshold: float | None = Field(description="Similarity a chunk had to reach; null = none.")
    coverage_target: float | None = Field(description="1 - alpha.")
    coverage_guaranteed: bool = Field(
        description="The question's own group had a finite, fresh threshold at alpha (no "
        "fallback) and the budget cut nothing above it."
    )
    calibration: CalibrationRefOut | None
    evidence: EvidenceOut
    timings_ms: TimingsOut
    request_id: str


class RetrieveResponse(RetrievalFields):
    """``POST /v1/retrieve``: the filtered passages, no generation."""

    warnings: list[str] = Field(
        description="What the caller should know, e.g. that the shift watch flagged drift."
    )


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


def _retrieval_fields(
    retrieval: Retrieval, citations: list[Citation], timings: dict[str, float], request_id: str
) -> dict[str, Any]:
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


def to_retrieve_response(retrieval: Retrieval, request_id: str) -> RetrieveResponse:
    citations = [Citation(n=i, chunk=h, cited=False) for i, h in enumerate(retrieval.hits, 1)]
    return RetrieveResponse(
        **_retrieval_fields(retrieval, citations, retrieval.timings_ms, request_id),
        warnings=list(retrieval.warnings),
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
        **_retrieval_fields(outcome.retrieval, outcome.citations, outcome.timings_ms, request_id),
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


# --- documents and collections ----------------------------------------------------------
class DocumentIn(_Strict):
    id: NotBlank = Field(max_length=512, description="Stable document key.")
    text: NotBlank = Field(description="Document text; must not be blank.")
    title: str | None = Field(None, max_length=1024)
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: str | None = Field(
        None, max_length=1024, description='Where the text came from (citations); "api" if unset.'
    )
    page_starts: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        max_length=100_000,
        description="Offsets in `text` at which pages 1, 2, … begin (from 0, in order): chunks "
        "then keep within a page and citations carry its number.",
    )


class DocumentsIn(_Strict):
    """``POST /v1/collections/{name}/documents``."""

    documents: list[DocumentIn] = Field(
        min_length=1,
        description="Ids unique within a request; at most COVRAG_MAX_DOCUMENTS_PER_REQUEST "
        "documents, each of at most COVRAG_MAX_DOCUMENT_CHARS characters.",
    )


def to_documents(body: DocumentsIn) -> list[Document]:
    return [
        Document(
            id=d.id,
            text=d.text,
            title=d.title,
            source=d.source or "api",
            metadata=d.metadata,
            page_starts=tuple(d.page_starts or ()),
        )
        for d in body.documents
    ]


def to_documents_in(docs: list[Document]) -> DocumentsIn:
    """The inverse of ``to_documents``: files read by the CLI, sent to a server."""
    return DocumentsIn(
        documents=[
            DocumentIn(
                id=d.id,
                text=d.text,
                title=d.title,
                metadata=d.metadata,
                source=d.source,
                page_starts=list(d.page_starts) or None,
            )
            for d in docs
        ]
    )


class IngestOut(BaseModel):
    collection: str
    documents: int
    added: int
    updated: int
    unchanged: int
    chunks_written: int


def to_ingest_out(collection: str, report: IngestReport) -> IngestOut:
    return IngestOut(
        collection=collection,
        documents=report.documents,
        added=report.added,
        updated=report.updated,
        unchanged=report.unchanged,
        chunks_written=report.chunks_written,
    )


class DeletedOut(BaseModel):
    collection: str
    doc_id: str
    chunks_deleted: int


class DocumentOut(BaseModel):
    id: str
    title: str
    chunks: int = Field(description="Chunks the document was cut into.")


class DocumentsPageOut(BaseModel):
    """``GET /v1/collections/{name}/documents``: one page, in a stable (chunk-id) order."""

    collection: str
    documents: list[DocumentOut]
    total: int = Field(description="Documents in the collection.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null after the last page."
    )


def to_documents_page(collection: str, page: DocumentPage) -> DocumentsPageOut:
    return DocumentsPageOut(
        collection=collection,
        documents=[DocumentOut(id=d.id, title=d.title, chunks=d.chunks) for d in page.documents],
        total=page.total,
        next_cursor=page.cursor,
    )


class CollectionDeletedOut(BaseModel):
    """``DELETE /v1/collections/{name}``: what the collection held."""

    collection: str
    documents_deleted: int
    chunks_deleted: int


class EmbedderOut(BaseModel):
    model: str
    dim: int


class CollectionOut(BaseModel):
    name: str
    documents: int
    chunks: int
    indexed: int = Field(
        description="Chunks in an HNSW index (the rest are searched by brute force), at most "
        "`chunks`; chunks deleted or rewritten since the last build may still count until the "
        "next one."
    )
    embedder: EmbedderOut
    created_at: datetime


def to_collection_out(info: CollectionInfo) -> CollectionOut:
    return CollectionOut(
        name=info.name,
        documents=info.documents,
        chunks=info.chunks,
        indexed=info.indexed,
        embedder=EmbedderOut(model=info.embedder.model, dim=info.embedder.dim),
        created_at=info.created_at,
    )


class CollectionsOut(BaseModel):
    collections: list[CollectionOut]


class IndexRequest(_Strict):
    """``POST /v1/collections/{name}/index``; ``{}`` builds with no time limit."""

    timeout_s: float | None = Field(
        None, gt=0, description="Stop the build after this long; the collection stays as it was."
    )


# --- health and errors ------------------------------------------------------------------
class ReadyOut(BaseModel):
    status: str = Field(
        description="ready; degraded (ready, but a shared worker such as the generator is "
        "down: /v1/query answers 503 meanwhile); or unavailable"
    )
    checks: dict[str, str] = Field(description="Per dependency: ok, or what failed.")
    required: list[str] = Field(description="The checks that decide readiness.")


class ErrorBody(BaseModel):
    type: str
    message: str
    param: str | None = None


class ErrorOut(BaseModel):
    """The one error envelope of every non-2xx response."""

    error: ErrorBody
    request_id: str | None = None


# --- streamed bodies --------------------------------------------------------------------
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


# --- calibration and jobs ---------------------------------------------------------------
class QaItemIn(_Strict):
    """A calibration QA pair: the answer-bearing chunk is a chunk of a gold document."""

    # The validator below, stated in the schema: a pair needs one non-empty evidence list.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"minItems": 1}}}
                for name in ("answers", "gold_doc_ids", "gold_titles")
            ]
        }
    )

    id: str = Field(min_length=1, max_length=512)
    question: str = Field(min_length=1, max_length=4000)
    answers: list[str] = Field(default_factory=list)
    gold_doc_ids: list[str] = Field(default_factory=list)
    gold_titles: list[str] = Field(default_factory=list, description="Alias of gold_doc_ids.")
    type: str | None = Field(
        None,
        description="single, bridge or comparison (bridge: the last gold document "
        "holds the answer); any other label is kept as is.",
    )
    group: GroupName | None = Field(
        None, description="Calibration group: requests naming it get its own threshold."
    )

    @model_validator(mode="after")
    def _needs_evidence(self) -> QaItemIn:
        if not (self.answers or self.gold_doc_ids or self.gold_titles):
            raise ValueError("a QA pair needs answers or gold documents")
        return self


class CalibrationRequest(_Strict):
    """``POST /v1/collections/{name}/calibration``: give ``qa`` pairs or ask to ``generate``."""

    # The validator below, stated in the schema: exactly one of the two is given.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                for name in ("qa", "generate")
            ]
        }
    )

    qa: list[QaItemIn] | None = Field(None, min_length=1, max_length=20_000)
    generate: Annotated[int, Field(ge=1, le=5000), BeforeValidator(_integral)] | None = Field(
        None,
        description="Chunks to sample for generated questions, one question each: at most "
        "the collection's chunk count (more is a 422 saying how many it has).",
    )
    seed: JsonInt = Field(0, description="Seed of the chunk sample.")
    default_alpha: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Alpha used when a query names none; default COVRAG_DEFAULT_ALPHA. Must be "
        "at least 1/(n+1) for n questions (else 422): a smaller one would refuse every query.",
    )
    replace_smaller: bool = Field(
        False,
        description="Allow replacing the current calibration by one with fewer than half its "
        "questions (else 409). The replaced one stays restorable.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> CalibrationRequest:
        if (self.qa is None) == (self.generate is None):
            raise ValueError("give exactly one of qa or generate")
        return self

    @property
    def questions(self) -> int:
        """The calibration's size: the QA pairs, or at most the chunks sampled."""
        return len(self.qa) if self.qa is not None else int(self.generate or 0)


def to_items(qa: list[QaItemIn]) -> list[CalibrationItem]:
    return [
        CalibrationItem(
            id=q.id,
            question=q.question.strip(),
            answers=tuple(q.answers),
            gold_doc_ids=answer_docs(tuple(q.gold_doc_ids or q.gold_titles), q.type or ""),
            kind=q.type or "",
            group=q.group or "",
        )
        for q in qa
    ]


def to_qa_in(items: list[CalibrationItem]) -> list[QaItemIn]:
    """The inverse of ``to_items``: a QA file read by the CLI, sent to a server."""
    return [
        QaItemIn(
            id=i.id,
            question=i.question,
            answers=list(i.answers),
            gold_doc_ids=list(i.gold_doc_ids),
            type=i.kind or None,
            group=i.group or None,
        )
        for i in items
    ]


class JobOut(BaseModel):
    id: str
    kind: str
    collection: str
    status: str = Field(description="queued, running, succeeded or failed")
    progress: float
    created_at: str
    finished_at: str | None
    error: str | None
    result: dict[str, Any] | None
    messages: list[str]
    attempts: int = Field(description="Runs started; above 1 after an API restart resumed it.")


def to_job_out(job: Job) -> JobOut:
    return JobOut(**{k: v for k, v in asdict(job).items() if k != "request"})


class GroupCalibrationOut(BaseModel):
    n: int
    thresholds: dict[str, float | None] = Field(
        description="The similarity threshold a request of this group gets at alpha 0.05, "
        "0.1, 0.2 (its own, or the pooled one where that is lower); null: too few questions "
        "(or too many misses) for that alpha, so the pooled threshold applies, unguaranteed."
    )


class CalibrationOut(BaseModel):
    n: int
    version: int
    created_at: str
    source: str
    embedder: str
    misses: int = Field(
        description="Questions whose answer chunk was not found (score +inf); through an index, "
        "also those the index did not return."
    )
    skipped: int = Field(description="Generated questions dropped as unusable.")
    default_alpha: float
    min_alpha: float = Field(description="Smallest supported alpha, 1/(n+1).")
    indexed: int = Field(
        description="Chunks in an HNSW index when it was scored; 0 = scored on exact search."
    )
    stale: bool = Field(
        description="The collection changed too much, or was indexed, since: no guarantee."
    )
    groups: dict[str, GroupCalibrationOut] = Field(
        description="Per group (`kind:…`, `group:…`): its questions and own thresholds. A "
        "request whose group has no finite threshold at its alpha gets the pooled one, "
        "unguaranteed."
    )


def to_calibration_out(calibration: Calibration, stale: bool) -> CalibrationOut:
    return CalibrationOut(
        n=calibration.n,
        version=calibration.version,
        created_at=calibration.created_at,
        source=calibration.source,
        embedder=calibration.embedder,
        misses=calibration.misses,
        skipped=calibration.skipped,
        default_alpha=calibration.default_alpha,
        min_alpha=calibration.min_alpha,
        indexed=calibration.indexed_at,
        stale=stale,
        groups={
            group: GroupCalibrationOut(
                n=len(scores),
                thresholds={
                    str(a): _group_threshold(calibration, a, group) for a in REPORTED_ALPHAS
                },
            )
            for group, scores in calibration.groups.items()
        },
    )


def _group_threshold(calibration: Calibration, alpha: float, group: str) -> float | None:
    """The threshold a request of ``group`` gets at ``alpha``; None when it falls back."""
    if alpha < calibration.min_alpha:
        return None
    quantile = calibration.group_qhat(alpha, group)
    return None if quantile.fallback else score_threshold(quantile.qhat)


class RestoreRequest(_Strict):
    """``POST /v1/collections/{name}/calibration/restore``."""

    version: Annotated[int, Field(ge=1), BeforeValidator(_integral)] = Field(
        description="A kept version (GET …/calibration/versions) to make current."
    )


class CalibrationVersionOut(BaseModel):
    """A kept calibration; ``POST …/calibration/restore`` makes it current again."""

    version: int
    current: bool = Field(description="The calibration queries use now.")
    created_at: str
    n: int
    min_alpha: float = Field(description="Smallest supported alpha, 1/(n+1).")
    default_alpha: float
    source: str


class CalibrationVersionsOut(BaseModel):
    collection: str
    versions: list[CalibrationVersionOut] = Field(
        description="Newest version first, the current one included; at most "
        f"{KEPT_VERSIONS} are kept."
    )


def to_versions_out(collection: str, kept: KeptCalibrations) -> CalibrationVersionsOut:
    both = [(c, False) for c in kept.earlier]
    if kept.current is not None:
        both.append((kept.current, True))
    return CalibrationVersionsOut(
        collection=collection,
        versions=[
            CalibrationVersionOut(
                version=c.version,
                current=current,
                created_at=c.created_at,
                n=c.n,
                min_alpha=c.min_alpha,
                default_alpha=c.default_alpha,
                source=c.source,
            )
            for c, current in sorted(both, key=lambda pair: pair[0].version, reverse=True)
        ],
    )


class DriftOut(BaseModel):
    """The shift watch of the current calibration, in this API process (each replica watches
    the traffic it serves)."""

    requests: int = Field(description="Live questions observed (unfiltered, first round).")
    window: int = Field(description="Questions per block tested against the calibration set.")
    statistic: float | None = Field(
        description="The last block's largest Kolmogorov-Smirnov distance (null: no full block)."
    )
    p_value: float | None = Field(description="The last block's smallest p-value.")
    level: float | None = Field(description="The level that block was tested at.")
    drifted: bool = Field(
        description="A block fell below its level: live questions do not look like the "
        "calibration set; queries carry a warning until the collection is recalibrated."
    )
    drifted_at: int | None
    signal: str | None = Field(description="top_similarity or multi_hop: what alarmed.")
    live_none_cleared: float | None = Field(
        description="Share of live requests where no chunk cleared the threshold."
    )
    predicted_none_cleared: float | None = Field(
        description="The share the calibration set predicts at the same thresholds."
    )


class CalibrationStatusOut(BaseModel):
    collection: str
    calibration: CalibrationOut | None
    drift: DriftOut | None = Field(
        description="The shift watch (null until a query reached a calibration that keeps "
        "its reference)."
    )
    job: JobOut | None = Field(description="The latest calibration job of this server.")
