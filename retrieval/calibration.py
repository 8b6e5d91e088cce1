"""Calibration sets and their nonconformity scores (the inputs of ``retrieval.conformal``).

"Answer-bearing" chunk of a calibration question, in this order of evidence:
1. the question's source chunk (generated questions);
2. any chunk of a gold document (QA pairs with ``gold_doc_ids``/``gold_titles``) — for a
   ``bridge`` question only the last one, as the first hop does not hold the answer; for a
   ``comparison`` question a chunk of each of its documents, as the answer needs both;
3. only when neither is given: a chunk whose normalised text contains a normalised answer.
(String matching is a last resort: short answers such as years occur in many unrelated chunks,
and counting those would make the threshold optimistic.)

A question whose answer-bearing chunk cannot be found is kept with score +∞ (a miss), never
dropped: dropping them biases the set, which is what the original code did.
"""

from __future__ import annotations

import math
import re
import string
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from retrieval.conformal import Calibration, min_alpha
from retrieval.embed.base import Embedder
from retrieval.errors import (
    CalibrationShrinks,
    CalibrationVersionNotFound,
    CollectionEmpty,
    DefaultAlphaUnsupported,
    NotEnoughChunks,
)
from retrieval.ingest import collection_changes
from retrieval.jsonl import question_of, read_jsonl
from retrieval.kinds import KindClassifier
from retrieval.store.base import VectorStore, index_builds
from retrieval.types import CollectionInfo, ScoredChunk

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


@dataclass(frozen=True, slots=True)
class CalibrationItem:
    """One calibration question with what identifies its answer-bearing chunk."""

    id: str
    question: str
    answers: tuple[str, ...] = ()
    gold_doc_ids: tuple[str, ...] = ()
    source_chunk_id: str | None = None
    kind: str = ""
    #: A caller's group (tenant, source, product): requests naming it take its own q̂.
    group: str = ""


@dataclass(frozen=True, slots=True)
class ItemScore:
    """A calibration question's outcome.

    ``rank`` is the 1-based rank of its best answer-bearing chunk among ``similarities`` (the
    top hits' scores, best first), or ``None`` when that chunk lies beyond them or was not found.
    """

    id: str
    score: float
    rank: int | None
    similarities: list[float] = field(default_factory=list)
    kind: str = ""

    @property
    def missed(self) -> bool:
        return math.isinf(self.score)


@dataclass(frozen=True, slots=True)
class QaFile:
    """Items parsed from a QA JSONL file, and the lines that could not be used."""

    items: list[CalibrationItem]
    errors: list[str]


def load_qa(path: Path) -> QaFile:
    """Parse ``{id, question, answers[], gold_titles[]?, gold_doc_ids[]?, type?, group?}``
    lines.

    Malformed lines are reported with their line numbers; the rest are used.
    """

    def parse(row: dict[str, Any], lineno: int) -> CalibrationItem:
        answers = tuple(str(a) for a in row.get("answers") or ())
        gold = tuple(str(g) for g in (row.get("gold_doc_ids") or row.get("gold_titles") or ()))
        if not answers and not gold:
            raise ValueError("needs answers or gold documents")
        kind = str(row.get("type", ""))
        return CalibrationItem(
            id=str(row.get("id", f"line-{lineno}")),
            question=question_of(row),
            answers=answers,
            gold_doc_ids=answer_docs(gold, kind),
            kind=kind,
            group=str(row.get("group") or ""),
        )

    items, errors = read_jsonl(path, parse)
    return QaFile(items=items, errors=errors)


def answer_docs(gold: tuple[str, ...], kind: str) -> tuple[str, ...]:
    """The gold documents that hold the answer: a bridge question's last hop only."""
    return gold[-1:] if kind == "bridge" else gold


def _bears_answer(item: CalibrationItem, hit: ScoredChunk) -> bool:
    if item.source_chunk_id is not None:
        return hit.id == item.source_chunk_id
    if item.gold_doc_ids:
        return hit.doc_id in item.gold_doc_ids
    text = normalize_answer(hit.text)
    return any(a and a in text for a in map(normalize_answer, item.answers))


def score_items(
    store: VectorStore,
    embedder: Embedder,
    collection: str,
    items: Sequence[CalibrationItem],
    *,
    search_k: int = 100,
    approximate: bool = False,
) -> list[ItemScore]:
    """Nonconformity score 1 − similarity of each item's best answer-bearing chunk; see
    ``score_vectors``."""
    if not items:
        return []
    vectors = embedder.embed([it.question for it in items])
    return score_vectors(
        store, collection, items, vectors.tolist(), search_k=search_k, approximate=approximate
    )


def score_vectors(
    store: VectorStore,
    collection: str,
    items: Sequence[CalibrationItem],
    vectors: Sequence[list[float]],
    *,
    search_k: int = 100,
    approximate: bool = False,
) -> list[ItemScore]:
    """``score_items`` for questions already embedded (``vectors``, one per item).

    Beyond the top ``search_k`` hits, gold documents and source chunks are still found with a
    filtered search, so their score is exact; an answer string is looked for in the top hits only
    (a chunk further down would only lower the similarity, so this errs on the safe side).
    With ``approximate`` (the collection is searched through an HNSW index), a chunk the search
    did not return scores ∞ instead: a query's threshold search, through the same index, could
    miss it too, and the quantile then counts that miss against the coverage.
    """
    out: list[ItemScore] = []
    for item, query in zip(items, vectors, strict=True):
        hits = store.search(collection, query, limit=search_k)
        found = [_best(store, collection, query, hits, part, approximate) for part in _parts(item)]
        ranks = [rank for rank, _ in found]
        bests = [best for _, best in found]
        rank = None if None in ranks else max(r for r in ranks if r is not None)
        best = None if None in bests else min(b for b in bests if b is not None)
        score = math.inf if best is None else 1.0 - best
        sims = [h.score for h in hits]
        out.append(ItemScore(id=item.id, score=score, rank=rank, similarities=sims, kind=item.kind))
    return out


def _parts(item: CalibrationItem) -> list[CalibrationItem]:
    """What the context must hold for ``item``, each part one answer-bearing chunk: both
    articles of a comparison (its answer compares the two), else any one chunk. A question's
    score is then its worst part's, so covering it means covering every part."""
    if item.kind == "comparison" and item.source_chunk_id is None and len(item.gold_doc_ids) > 1:
        return [replace(item, gold_doc_ids=(doc,)) for doc in item.gold_doc_ids]
    return [item]


def _best(
    store: VectorStore,
    collection: str,
    query: list[float],
    hits: Sequence[ScoredChunk],
    item: CalibrationItem,
    approximate: bool,
) -> tuple[int | None, float | None]:
    """(rank among ``hits``, similarity) of the item's best answer-bearing chunk."""
    rank = next((i for i, h in enumerate(hits, 1) if _bears_answer(item, h)), None)
    if rank is not None:
        return rank, hits[rank - 1].score
    return None, None if approximate else _beyond_top(store, collection, query, item)


def _beyond_top(
    store: VectorStore, collection: str, query: list[float], item: CalibrationItem
) -> float | None:
    if item.source_chunk_id is not None:
        docs = store.get_payloads(collection, [item.source_chunk_id])
        if not docs:
            return None
        doc_id = str(docs[item.source_chunk_id]["doc_id"])
        hits = store.search(collection, query, limit=10_000, filters={"doc_id": doc_id})
        return next((h.score for h in hits if h.id == item.source_chunk_id), None)
    best = [
        hit.score
        for doc_id in item.gold_doc_ids
        for hit in store.search(collection, query, limit=1, filters={"doc_id": doc_id})
    ]
    return max(best) if best else None


#: Metadata key under which a collection keeps its calibration.
CALIBRATION_KEY = "calibration"
#: Metadata key of the earlier calibrations a restore can bring back, newest version first.
HISTORY_KEY = "calibration_history"
#: Calibrations a collection keeps, the current one included (each holds its sorted scores).
KEPT_VERSIONS = 10
#: A calibration with fewer questions than this share of the current one's replaces it only
#: with ``replace_smaller``: a much smaller set gives a coarser threshold and a higher
#: ``min_alpha``, which queries asking for a small α then fail on.
SHRINK_LIMIT = 0.5

#: Held while a collection's calibrations are read, renumbered and written back, so that a
#: restore and a finishing calibration in one process do not undo each other.
_KEEPING = threading.Lock()


@dataclass(frozen=True, slots=True)
class KeptCalibrations:
    """A collection's current calibration and the earlier ones kept, newest version first."""

    current: Calibration | None
    earlier: list[Calibration]


def load_calibration(store: VectorStore, collection: str) -> Calibration | None:
    """The collection's calibration, or ``None`` if it was never calibrated."""
    data = store.get_metadata(collection).get(CALIBRATION_KEY)
    return Calibration.from_json(data) if data else None


def kept_calibrations(store: VectorStore, collection: str) -> KeptCalibrations:
    """Every calibration of ``collection`` that ``restore_calibration`` can make current."""
    meta = store.get_metadata(collection)
    current = meta.get(CALIBRATION_KEY)
    return KeptCalibrations(
        current=Calibration.from_json(current) if current else None,
        earlier=[Calibration.from_json(c) for c in meta.get(HISTORY_KEY, [])],
    )


#: Beyond this many questions, "at least N" says nothing a user can act on.
_MAX_QUESTIONS = 1e12


def _questions_for(alpha: float) -> str:
    """``at least 9 questions``: the fewest calibration questions that support ``alpha``."""
    ratio = 1 / alpha - 1  # inf for a subnormal alpha
    if ratio < _MAX_QUESTIONS:
        return f"at least {math.ceil(round(ratio, 9))} questions"
    return "more questions than any calibration holds"


def check_replacement(
    current: Calibration | None, n: int, default_alpha: float, *, replace_smaller: bool
) -> None:
    """Refuse a calibration of ``n`` questions that would break the collection's queries, or
    replace ``current`` by a much smaller one unasked.

    Raises:
        DefaultAlphaUnsupported: ``default_alpha`` < 1/(n+1), so every query without α would
            be refused.
        CalibrationShrinks: fewer than ``SHRINK_LIMIT`` of ``current``'s questions, and not
            ``replace_smaller``.
    """
    if default_alpha < min_alpha(n):
        needed = _questions_for(default_alpha)
        raise DefaultAlphaUnsupported(
            f"default_alpha={default_alpha:g} is below the smallest alpha that {n} calibration "
            f"questions support, 1/{n + 1} = {min_alpha(n):.4g}: give a default_alpha of at "
            f"least that, or {needed}"
        )
    if current is not None and n < SHRINK_LIMIT * current.n and not replace_smaller:
        raise CalibrationShrinks(
            f"this calibration has {n} questions and would replace one of {current.n} "
            f"(version {current.version}): replacing a calibration by one under "
            f"{SHRINK_LIMIT:.0%} of its size needs replace_smaller (CLI: --replace-smaller); "
            "earlier versions stay restorable"
        )


@dataclass(frozen=True, slots=True)
class CalibrationTarget:
    """What ``check_calibration`` read: the collection to calibrate and its current
    calibration (``None`` if never calibrated)."""

    info: CollectionInfo
    current: Calibration | None


def check_calibration(
    store: VectorStore,
    collection: str,
    questions: int,
    *,
    default_alpha: float,
    replace_smaller: bool,
    sampled: bool = False,
) -> CalibrationTarget:
    """Refuse a calibration of ``questions`` questions that cannot succeed or would break the
    collection, and return what the calibration needs. Every way of calibrating (the API
    before its job, the CLI, ``calibrate`` itself) goes through here, so a refusal reads the
    same whichever way it came. With ``sampled``, ``questions`` chunks are sampled to write one
    question each from (``calibrate`` checks again with the count of usable ones).

    Raises:
        CollectionEmpty: nothing to calibrate against.
        NotEnoughChunks: more sampled questions than chunks, so no job could succeed.
        DefaultAlphaUnsupported, CalibrationShrinks: see ``check_replacement``; with
            ``sampled``, also a ``default_alpha`` that even one question per chunk cannot
            support, saying what would.
    """
    info = store.get_collection(collection)
    if info.chunks == 0:
        raise CollectionEmpty(
            f"collection {collection!r} is empty: ingest documents before calibrating"
        )
    if sampled:
        _check_sample(collection, info.chunks, questions, default_alpha)
    current = load_calibration(store, collection)
    check_replacement(current, questions, default_alpha, replace_smaller=replace_smaller)
    return CalibrationTarget(info=info, current=current)


def _check_sample(collection: str, chunks: int, questions: int, default_alpha: float) -> None:
    """Generated questions come one per chunk: refuse what the chunks cannot give, saying
    what can (more documents, the user's own QA pairs, a larger ``default_alpha``)."""
    if default_alpha < min_alpha(chunks):
        raise DefaultAlphaUnsupported(
            f"default_alpha={default_alpha:g} needs {_questions_for(default_alpha)}, and "
            f"collection {collection!r} has {chunks} chunks: generated calibration writes one "
            f"question per chunk, so at most {chunks}, which support alpha >= 1/{chunks + 1} = "
            f"{min_alpha(chunks):.4g}. Ingest more documents (a question per chunk), calibrate "
            "from your own QA pairs (qa; CLI: --from-qa), or give a default_alpha of at least "
            f"{min_alpha(chunks):.4g}"
        )
    if questions > chunks:
        raise NotEnoughChunks(
            f"generate={questions} asks for more questions than collection {collection!r} can "
            f"give: one question per chunk, and it has {chunks}; ask for at most {chunks}"
        )


def calibrate(
    store: VectorStore,
    embedder: Embedder,
    collection: str,
    items: Sequence[CalibrationItem],
    *,
    source: str,
    default_alpha: float,
    skipped: int = 0,
    replace_smaller: bool = False,
    kinds: KindClassifier | None = None,
) -> Calibration:
    """Score ``items``, then persist and return the collection's new calibration; the one it
    replaces is kept (``KEPT_VERSIONS``) for ``restore_calibration``.

    Each score also goes to its question's groups: each kind in its set by ``kinds`` (the
    shipped classifier by default, the one queries are grouped by) and its caller group if it
    has one.

    Raises:
        ValueError: no items.
        CollectionEmpty, DefaultAlphaUnsupported, CalibrationShrinks: see
            ``check_calibration``.
    """
    if not items:
        raise ValueError("no usable calibration questions")
    info = check_calibration(
        store, collection, len(items), default_alpha=default_alpha, replace_smaller=replace_smaller
    ).info
    builds = index_builds(store, collection)  # before scoring: a build meanwhile makes it stale
    scores = score_items(store, embedder, collection, items, approximate=info.indexed > 0)
    kinds = kinds or KindClassifier.load()
    groups = _grouped(items, [s.score for s in scores], kinds)
    calibration = Calibration(
        collection=collection,
        embedder=embedder.spec.model,
        scores=sorted(s.score for s in scores),
        source=source,
        version=0,  # numbered when kept
        changes_at=collection_changes(store, collection),
        chunks_at=info.chunks,
        misses=sum(s.missed for s in scores),
        skipped=skipped,
        default_alpha=default_alpha,
        index_builds_at=builds,
        indexed_at=info.indexed,
        groups=groups,
        kinds_version=kinds.version,
        top_similarities=[s.similarities[0] if s.similarities else 0.0 for s in scores],
        multi_hop=[kinds.multi_hop(item.question) for item in items],
    )
    with _KEEPING:
        kept = _kept_json(store, collection)
        version = max((int(c["version"]) for c in kept), default=0) + 1
        calibration = replace(calibration, version=version)
        store.update_metadata(
            collection, {CALIBRATION_KEY: calibration.to_json(), HISTORY_KEY: _newest(kept)}
        )
    return calibration


def _grouped(
    items: Sequence[CalibrationItem], scores: Sequence[float], kinds: KindClassifier
) -> dict[str, list[float]]:
    groups: dict[str, list[float]] = {}
    for item, score in zip(items, scores, strict=True):
        keys = {*kinds.groups(item.question), *kinds.groups(item.question, item.group)}
        for key in keys:
            groups.setdefault(key, []).append(score)
    return {key: sorted(values) for key, values in sorted(groups.items())}


def restore_calibration(store: VectorStore, collection: str, version: int) -> Calibration:
    """Make the kept calibration ``version`` current again (it keeps its number, its scores and
    what it was taken on, so it is stale if the collection changed since); the current one
    joins the earlier ones.

    Raises:
        CalibrationVersionNotFound: no kept calibration has that version.
    """
    with _KEEPING:
        kept = _kept_json(store, collection)
        chosen = next((c for c in kept if int(c["version"]) == version), None)
        if chosen is None:
            versions = ", ".join(str(c["version"]) for c in _newest(kept)) or "none"
            raise CalibrationVersionNotFound(
                f"collection {collection!r} keeps no calibration version {version} "
                f"(kept: {versions})"
            )
        earlier = _newest([c for c in kept if c is not chosen])
        store.update_metadata(collection, {CALIBRATION_KEY: chosen, HISTORY_KEY: earlier})
    return Calibration.from_json(chosen)


def _kept_json(store: VectorStore, collection: str) -> list[dict[str, Any]]:
    """The stored calibrations of ``collection``, current first."""
    meta = store.get_metadata(collection)
    current = meta.get(CALIBRATION_KEY)
    return ([current] if current else []) + list(meta.get(HISTORY_KEY, []))


def _newest(calibrations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history to keep beside a current calibration: the newest versions, newest first."""
    ordered = sorted(calibrations, key=lambda c: int(c["version"]), reverse=True)
    return ordered[: KEPT_VERSIONS - 1]
