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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from retrieval.conformal import RelativeScale
from retrieval.embed.base import Embedder
from retrieval.jsonl import question_of, read_jsonl
from retrieval.rerank import Reranking, reranked
from retrieval.store.base import VectorStore
from retrieval.types import ScoredChunk

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


def bears_answer(item: CalibrationItem, hit: ScoredChunk) -> bool:
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


def on_relative_scale(score: ItemScore, scale: RelativeScale) -> ItemScore:
    """``score`` on the relative scale: its top candidates' shares for similarities, and
    1 − its answer chunk's share (+∞ beyond the candidates) for the score."""
    shares = scale.shares(score.similarities)
    rank = score.rank if score.rank is not None and score.rank <= len(shares) else None
    return replace(
        score,
        score=math.inf if rank is None else 1.0 - shares[rank - 1],
        rank=rank,
        similarities=shares,
    )


def answer_positions(item: CalibrationItem, hits: Sequence[ScoredChunk]) -> list[list[int]]:
    """For each part the context must hold (``_parts``), the positions in ``hits`` of the
    chunks that bear it, first first; an empty list is a part no hit bears."""
    return [[i for i, h in enumerate(hits) if bears_answer(part, h)] for part in _parts(item)]


def rerank_scores(
    store: VectorStore,
    rerank: Reranking,
    collection: str,
    items: Sequence[CalibrationItem],
    vectors: Sequence[list[float]],
) -> list[float]:
    """The reranked nonconformity of each item: 1 − relevance of its answer-bearing chunk
    among its top dense candidates (a comparison's worse article), +∞ when it is not
    among them (the reranker never sees it, so a query could not keep it either)."""
    out: list[float] = []
    for item, vector in zip(items, vectors, strict=True):
        hits = store.search(collection, vector, limit=rerank.candidates)
        ranked = reranked(rerank.reranker, item.question, hits)
        worst = worst_part(item, ranked)
        out.append(math.inf if worst is None else 1.0 - (ranked[worst].relevance or 0.0))
    return out


def worst_part(item: CalibrationItem, ranked: Sequence[ScoredChunk]) -> int | None:
    """Where in ``ranked`` the context first holds every part of ``item``'s answer (the
    position of its worst part's first chunk), ``None`` when some part is missing."""
    best = [found[0] if found else None for found in answer_positions(item, ranked)]
    return None if None in best else max(b for b in best if b is not None)


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
    rank = next((i for i, h in enumerate(hits, 1) if bears_answer(item, h)), None)
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
