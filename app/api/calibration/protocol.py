"""Calibration wire models: the QA pairs or generation a client asks for, the calibration
with its per-group thresholds, the kept versions, and the shift watch."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from app.api.jobs.protocol import JobOut
from app.api.protocol import GroupName, JsonInt, Strict, integral
from retrieval.calibration import KEPT_VERSIONS, KeptCalibrations
from retrieval.calibration_set import CalibrationItem, answer_docs
from retrieval.conformal import REPORTED_ALPHAS, Calibration, score_threshold


class QaItemIn(Strict):
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


class CalibrationRequest(Strict):
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
    generate: Annotated[int, Field(ge=1, le=5000), BeforeValidator(integral)] | None = Field(
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


class GroupCalibrationOut(BaseModel):
    n: int
    thresholds: dict[str, float | None] = Field(
        description="The similarity threshold a request of this group gets at alpha 0.05, "
        "0.1, 0.2 (its own, or the pooled one where that is lower); null: too few questions "
        "(or too many misses) for that alpha, so the pooled threshold applies, unguaranteed."
    )


class RerankCalibrationOut(BaseModel):
    version: str = Field(description="The reranker that scored the questions (its weights' hash).")
    candidates: int = Field(description="Dense candidates it reranked a question.")
    misses: int = Field(description="Questions whose answer chunk was not a candidate.")
    groups: dict[str, GroupCalibrationOut] = Field(
        description="As `groups`, with thresholds on the reranker's relevance."
    )


class RelativeCalibrationOut(BaseModel):
    candidates: int = Field(description="Top dense hits a chunk's share is taken among.")
    temperature: float = Field(description="The softmax temperature over their cosines.")
    floor: float = Field(description='The cosine of the "none of these" candidate.')
    misses: int = Field(description="Questions whose answer chunk was not a candidate.")
    groups: dict[str, GroupCalibrationOut] = Field(
        description="As `groups`, with thresholds on a chunk's relative share."
    )


class LinksCalibrationOut(BaseModel):
    n: int = Field(
        description="Labelled multi-hop questions (QA `type: bridge`) grouped `kind:bridge`."
    )
    link_from: int = Field(description="The top dense hits whose named documents are followed.")
    links: dict[str, int | None] = Field(
        description="Linked documents a possibly multi-hop question's context adds at alpha "
        "0.05, 0.1, 0.2; null: too few labelled multi-hop questions for that alpha, so such "
        "questions are not guaranteed."
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
    reranked: RerankCalibrationOut | None = Field(
        description="The same questions scored by the server's reranker, for `rerank` "
        "requests; null: calibrated without one."
    )
    relative: RelativeCalibrationOut | None = Field(
        description="The same questions on the relative scale (COVRAG_CONFORMAL_SCORE="
        "relative); null: calibrated before it existed (thresholds stay on the cosine)."
    )
    multi_hop: LinksCalibrationOut | None = Field(
        description='The second hop\'s calibration (docs/conformal.md, "Multi-hop"); null: '
        "calibrated before it existed."
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
        groups=_groups_out(calibration),
        reranked=None
        if not calibration.rerank_version
        else RerankCalibrationOut(
            version=calibration.rerank_version,
            candidates=calibration.rerank_candidates,
            misses=calibration.reranked().misses,
            groups=_groups_out(calibration.reranked()),
        ),
        relative=None
        if calibration.relative_scale is None
        else RelativeCalibrationOut(
            candidates=calibration.relative_scale.candidates,
            temperature=calibration.relative_scale.temperature,
            floor=calibration.relative_scale.floor,
            misses=calibration.relative().misses,
            groups=_groups_out(calibration.relative()),
        ),
        multi_hop=None
        if not calibration.link_from
        else LinksCalibrationOut(
            n=len(calibration.links),
            link_from=calibration.link_from,
            links={str(a): calibration.link_quantile(a) for a in REPORTED_ALPHAS},
        ),
    )


def _groups_out(calibration: Calibration) -> dict[str, GroupCalibrationOut]:
    return {
        group: GroupCalibrationOut(
            n=len(scores),
            thresholds={str(a): _group_threshold(calibration, a, group) for a in REPORTED_ALPHAS},
        )
        for group, scores in calibration.groups.items()
    }


def _group_threshold(calibration: Calibration, alpha: float, group: str) -> float | None:
    """The threshold a request of ``group`` gets at ``alpha``; None when it falls back."""
    if alpha < calibration.min_alpha:
        return None
    quantile = calibration.group_qhat(alpha, group)
    return None if quantile.fallback else score_threshold(quantile.qhat)


class RestoreRequest(Strict):
    """``POST /v1/collections/{name}/calibration/restore``."""

    version: Annotated[int, Field(ge=1), BeforeValidator(integral)] = Field(
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
