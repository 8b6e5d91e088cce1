"""The calibrations a collection keeps: ``calibrate`` scores a calibration set
(``retrieval.calibration_set``), takes its conformal quantiles (``retrieval.conformal``) and
stores them as the collection's newest version; earlier versions stay restorable, and the
checks here refuse a set too small for its default α before any work."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from retrieval.calibration_set import (
    CalibrationItem,
    on_relative_scale,
    rerank_scores,
    score_vectors,
)
from retrieval.conformal import Calibration, RelativeScale, min_alpha
from retrieval.embed.base import Embedder
from retrieval.errors import (
    CalibrationShrinks,
    CalibrationVersionNotFound,
    CollectionEmpty,
    DefaultAlphaUnsupported,
    NotEnoughChunks,
)
from retrieval.ingest import collection_changes
from retrieval.kinds import BRIDGE_GROUP, KindClassifier, relative_keys
from retrieval.links import LINK_FROM, link_rank
from retrieval.rerank import Reranking
from retrieval.store.base import VectorStore, index_builds
from retrieval.types import CollectionInfo

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
    rerank: Reranking | None = None,
) -> Calibration:
    """Score ``items``, then persist and return the collection's new calibration; the one it
    replaces is kept (``KEPT_VERSIONS``) for ``restore_calibration``.

    Each score also goes to its question's groups: each kind in its set by ``kinds`` (the
    shipped classifier by default, the one queries are grouped by) and its caller group if it
    has one, and to that group's members of its labelled kind (a QA file's ``type``: the
    groups stay the classifier's, the labels only raise a group's q̂). The labelled multi-hop
    questions of ``BRIDGE_GROUP`` also get their link rank (``retrieval.links``). With
    ``rerank``, the items are also scored on its reranker's scale, among their top dense
    candidates, for reranked requests; and always on the relative scale (``RelativeScale``),
    from the same searches.

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
    vectors = embedder.embed([it.question for it in items]).tolist()
    scores = score_vectors(store, collection, items, vectors, approximate=info.indexed > 0)
    kinds = kinds or KindClassifier.load()
    keys = [_keys(item, kinds) for item in items]
    groups = _grouped(keys, [s.score for s in scores])
    reranked = [] if rerank is None else rerank_scores(store, rerank, collection, items, vectors)
    scale = RelativeScale()
    on_scale = [on_relative_scale(s, scale) for s in scores]
    relative = [s.score for s in on_scale]
    # each question counts in the relative scale's groups it would be served in
    served = [relative_keys(ks) for ks in keys]
    hops = [
        link_rank(store, collection, vector, item.gold_doc_ids)
        for item, ks, vector in zip(items, keys, vectors, strict=True)
        if item.kind == "bridge" and BRIDGE_GROUP in ks
    ]
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
        rerank_version="" if rerank is None else rerank.reranker.version,
        rerank_candidates=0 if rerank is None else rerank.candidates,
        rerank_scores=sorted(reranked),
        rerank_groups=_grouped(keys, reranked) if reranked else {},
        labelled=_grouped(_labels(items, keys), [s.score for s in scores]),
        rerank_labelled=_grouped(_labels(items, keys), reranked) if reranked else {},
        links=sorted(hops),
        link_from=LINK_FROM,
        relative_scale=scale,
        relative_scores=sorted(r for r, ks in zip(relative, served, strict=True) if ks),
        relative_groups=_grouped(served, relative),
        relative_labelled=_grouped(_labels(items, served), relative),
        relative_top=[
            s.similarities[0] if s.similarities else 0.0
            for s, ks in zip(on_scale, served, strict=True)
            if ks
        ],
    )
    with _KEEPING:
        kept = _kept_json(store, collection)
        version = max((int(c["version"]) for c in kept), default=0) + 1
        calibration = replace(calibration, version=version)
        store.update_metadata(
            collection, {CALIBRATION_KEY: calibration.to_json(), HISTORY_KEY: _newest(kept)}
        )
    return calibration


def _keys(item: CalibrationItem, kinds: KindClassifier) -> set[str]:
    """The groups a calibration question counts in: each kind of its set, and its caller
    group if it has one."""
    return {*kinds.groups(item.question), *kinds.groups(item.question, item.group)}


def _labels(items: Sequence[CalibrationItem], keys: Sequence[Iterable[str]]) -> list[set[str]]:
    """Each question's ``group|kind`` keys: its groups' members of its labelled kind (an
    unlabelled question counts in none)."""
    return [{f"{k}|{it.kind}" for k in ks if it.kind} for it, ks in zip(items, keys, strict=True)]


def _grouped(keys: Sequence[Iterable[str]], scores: Sequence[float]) -> dict[str, list[float]]:
    """Each key's sorted scores, ``keys[i]`` being the keys of the question scored ``scores[i]``."""
    groups: dict[str, list[float]] = {}
    for ks, score in zip(keys, scores, strict=True):
        for key in ks:
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
