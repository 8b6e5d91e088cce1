"""Query-time retrieval through the conformal filter (CONFLARE step 4).

With a calibrated collection, α becomes a similarity threshold (``retrieval.conformal``) and the
engine does the filtering: one Qdrant search with ``score_threshold`` and ``limit`` = the
context budget + 1, so the budget cutting off chunks that cleared the threshold is detected
(then ``coverage_guaranteed`` is false). Without a calibration it is plain top-k search.

The threshold is the question's groups' (Mondrian calibration, ``retrieval.conformal``): the
caller's ``group``, else each kind in the question's set (``retrieval.kinds``), the largest of
their q̂s; a group with too few calibration questions for α takes the pooled one, and then
nothing is guaranteed. A question that may be multi-hop (``BRIDGE_GROUP`` in its set) is
guaranteed only with ``multi_hop_links``: it then also gets the top hits and the calibrated
number of documents they name (``retrieval.links``), when that number is calibrated at its α
and fits the budget.

With ``score="relative"`` (``COVRAG_CONFORMAL_SCORE``), a calibration that holds the relative
scale, and a request whose groups are all served on it (``retrieval.kinds.relative_keys``: a
caller's group, or a question that can only be single-hop), the search takes the top dense
candidates and keeps those whose share of them (``retrieval.conformal.RelativeScale``) reaches
the threshold: fewer chunks at the same coverage.

A reranked request (``rerank``) searches the top dense candidates instead, has the cross-encoder
(``retrieval.rerank``) score them, and thresholds its relevance: the calibration holds the same
questions scored by that reranker, so the guarantee is on the reranked set.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from retrieval.calibration import load_calibration
from retrieval.conformal import Calibration, GroupQuantile, RelativeScale, score_threshold
from retrieval.embed.base import Embedder
from retrieval.errors import (
    AlphaOutOfRange,
    EmbedderMismatch,
    NotCalibrated,
    RerankerUnavailable,
)
from retrieval.hybrid import SearchMode, with_keywords
from retrieval.ingest import collection_changes
from retrieval.kinds import BRIDGE_GROUP, KindClassifier, relative_keys
from retrieval.links import linked_docs, with_links
from retrieval.rerank import Reranking, reranked
from retrieval.store.base import VectorStore, index_builds
from retrieval.types import (
    Budget,
    CalibrationRef,
    FilterValue,
    Retrieval,
    Scale,
    ScoredChunk,
)


@dataclass(frozen=True, slots=True)
class _Found:
    """What a search found: its hits (the shift watch's top similarity), the passages kept
    within the budget, whether the budget cut some that cleared the threshold, and how many
    of the kept ones cleared it (the rest are keyword hits that joined)."""

    hits: list[ScoredChunk]
    kept: list[ScoredChunk]
    cut: bool
    cleared: int


class Retriever:
    """Embeds a question and searches, through the conformal filter when calibrated.

    Args:
        stale_fraction: a calibration is stale once the collection changed by more than this
            fraction of its chunks since; stale calibrations still filter but guarantee nothing.
        unreachable: when q̂ is infinite for the asked α (too many calibration misses),
            ``"budget"`` passes the top chunks up to the budget with no guarantee and
            ``"error"`` refuses the request.
        kinds: groups questions by kind, as their calibration was (the shipped classifier).
        multi_hop_links: a question that may be multi-hop gets the calibrated linked
            documents (``retrieval.links``); off, round 0's passages only, unguaranteed.
        keyword_hits: with ``search="hybrid"`` on a calibrated collection, the keyword hits
            that may join the chunks that cleared the threshold (``retrieval.hybrid``).
        reranking: the cross-encoder reranked requests use and the dense candidates it
            reranks on an uncalibrated collection (a calibrated one reranks as many as it was
            calibrated with); ``None``: reranked requests are refused.
        score: the scale thresholds are on: ``"relative"`` for the requests it serves
            (``retrieval.kinds.relative_keys``) when the calibration holds it (one taken
            before it existed stays on the cosine), else the cosine.
    """

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        *,
        stale_fraction: float = 0.1,
        unreachable: Literal["budget", "error"] = "budget",
        kinds: KindClassifier | None = None,
        multi_hop_links: bool = False,
        keyword_hits: int = 3,
        reranking: Reranking | None = None,
        score: Literal["cosine", "relative"] = "cosine",
    ) -> None:
        self.store = store
        self._score = score
        self.reranking = reranking
        self.embedder = embedder
        self.kinds = kinds or KindClassifier.load()
        self._keyword_hits = keyword_hits
        self._multi_hop_links = multi_hop_links
        self._stale_fraction = stale_fraction
        self._unreachable = unreachable

    def calibration(self, collection: str) -> tuple[Calibration | None, bool]:
        """The collection's calibration and whether it is stale."""
        calibration = load_calibration(self.store, collection)
        if calibration is None:
            return None, False
        changes = collection_changes(self.store, collection)
        builds = index_builds(self.store, collection)
        return calibration, calibration.is_stale(changes, builds, self._stale_fraction)

    def retrieve(
        self,
        collection: str,
        question: str,
        *,
        alpha: float | None,
        budget: Budget,
        filters: Mapping[str, FilterValue] | None = None,
        conformal: bool = True,
        loaded: tuple[Calibration | None, bool] | None = None,
        vector: list[float] | None = None,
        group: str | None = None,
        search: SearchMode = "dense",
        rerank: bool = False,
    ) -> Retrieval:
        """Blocking (embedding, search): callers on an event loop run it in a thread.

        ``conformal=False`` ignores a calibration: plain top-k (the evaluation's baseline).
        ``group``: the caller's calibration group; without one, the question's kind.
        ``loaded``: the collection's calibration and staleness if the caller has read them
        (``calibration()``), so a request reads them once; else they are read here.
        ``vector``: the question's embedding if the caller has it (cached); else it is
        computed here, timed as ``embed``.
        ``search="hybrid"``: keyword hits join the dense ones (``retrieval.hybrid``), timed in
        ``search``; the guarantee is the dense threshold's, unchanged.
        """
        built_with = self.store.embedder(collection)  # 404 before any model work
        if built_with != self.embedder.spec:
            raise EmbedderMismatch(
                f"collection {collection!r} was built with {built_with.model}; "
                f"this server embeds queries with {self.embedder.spec.model}"
            )
        timings: dict[str, float] = {}
        start = time.perf_counter()
        if not conformal:
            loaded = (None, False)
        calibration, stale = self.calibration(collection) if loaded is None else loaded
        # the question's group and multi-hop score matter only against a calibration
        groups, multi_hop = (
            self.kinds.read(question, group) if calibration is not None else ((), None)
        )
        scale: Scale = "rerank" if rerank else "cosine"
        relative: RelativeScale | None = None
        on_cosine = calibration
        if rerank:
            calibration = self._reranked(collection, calibration)
        elif (
            calibration
            and calibration.relative_scores
            and calibration.relative_scale
            and self._score == "relative"
            and relative_keys(groups) == set(groups)
        ):
            scale, relative = "relative", calibration.relative_scale
            calibration = calibration.relative()
        quantile, alpha = self._threshold(collection, calibration, alpha, groups, on_cosine)
        threshold = None if quantile is None else score_threshold(quantile.qhat)
        cosine_threshold = (
            threshold
            if scale == "cosine" or on_cosine is None or alpha is None
            else score_threshold(self._quantile(on_cosine, alpha, groups).qhat)
        )
        timings["filter"] = _ms(start)
        if vector is None:
            start = time.perf_counter()
            vector = self.embedder.embed([question])[0].tolist()
            timings["embed"] = _ms(start)
        search_in = (collection, question, vector, threshold, budget, filters, search, timings)
        if rerank:  # as many candidates as calibrated with (more only add to the set)
            assert self.reranking is not None  # _reranked refused the request otherwise
            pool = calibration.rerank_candidates if calibration else self.reranking.candidates
            found = self._rerank_search(*search_in, candidates=pool)
        else:
            found = self._search(*search_in, relative=relative)
        matched_nothing = bool(filters) and not found.hits
        if matched_nothing and threshold is not None:
            matched_nothing = self.store.count(collection, filters) == 0
        kept, cut = found.kept, found.cut
        links = (
            _link_quantile(calibration, alpha, groups, filters) if self._multi_hop_links else None
        )
        if links is not None:
            start = time.perf_counter()
            ext = with_links(self.store, collection, vector, links)
            have = {h.id for h in kept}
            wanted = [*kept, *(h for h in ext if h.id not in have)]
            kept = _fit(wanted, budget)
            cut = cut or len(kept) < len(wanted)
            timings["search"] = timings.get("search", 0.0) + _ms(start)
        own = quantile is not None and not quantile.fallback
        top = found.hits[0].score if found.hits else None
        if top is None and threshold is not None and not filters:
            # nothing cleared: how close the best came (the shift watch's input; it leaves
            # filtered searches out, so they need not pay for this search)
            best = self.store.search(collection, vector, limit=1)
            top = best[0].score if best else None
        return Retrieval(
            hits=kept,
            alpha=alpha,
            threshold=threshold,
            cosine_threshold=cosine_threshold,
            coverage_guaranteed=own
            and threshold is not None
            and not cut
            and not stale
            and (BRIDGE_GROUP not in groups or links is not None),
            calibration=None
            if calibration is None or quantile is None
            else CalibrationRef(
                n=(on_cosine or calibration).n,
                version=calibration.version,
                stale=stale,
                group=quantile.group,
                group_n=quantile.n,
                fallback=quantile.fallback,
                groups=groups,
                links=links,
                scale=scale,
            ),
            budget=budget.chunks,
            budget_cut=cut,
            joined=len(kept) - min(found.cleared, len(kept)) if threshold is not None else 0,
            filter_matched_nothing=matched_nothing,
            timings_ms=timings,
            vector=vector,
            top_similarity=top,
            multi_hop=multi_hop,
        )

    def linked(
        self,
        collection: str,
        vector: Sequence[float],
        passages: Sequence[ScoredChunk],
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[ScoredChunk]:
        """The documents the passages name, best first (``retrieval.links``). Blocking."""
        return linked_docs(self.store, collection, vector, passages, filters)

    def _search(
        self,
        collection: str,
        question: str,
        vector: list[float],
        threshold: float | None,
        budget: Budget,
        filters: Mapping[str, FilterValue] | None,
        search: SearchMode,
        timings: dict[str, float],
        *,
        relative: RelativeScale | None = None,
    ) -> _Found:
        """Dense search through the threshold, then (hybrid) the keyword hits that join.

        On the cosine the engine filters; on the ``relative`` scale the top candidates are
        searched and those whose share reaches the threshold pass."""
        start = time.perf_counter()
        if relative is None:
            # One more than the budget when filtering: seeing it tells that the budget cut.
            hits = self.store.search(
                collection,
                vector,
                limit=budget.chunks + (threshold is not None),
                score_threshold=threshold,
                filters=filters or None,
            )
            passed = hits
        else:
            found = self.store.search(
                collection, vector, limit=relative.candidates, filters=filters or None
            )
            shares = relative.shares([h.score for h in found])
            hits = [replace(h, relevance=p) for h, p in zip(found, shares, strict=True)]
            passed = (
                hits[: budget.chunks]
                if threshold is None
                else [h for h in hits if (h.relevance or 0.0) >= threshold]
            )
        kept = _fit(passed, budget)
        cut, cleared = len(kept) < len(passed), len(kept)
        if search == "hybrid":
            conformal_set = threshold is not None
            words = self.store.keyword_search(
                collection,
                question,
                vector,
                limit=self._keyword_hits if conformal_set else budget.chunks,
                filters=filters or None,
            )
            kept = with_keywords(
                kept,
                words,
                conformal=conformal_set,
                extra=self._keyword_hits,
                fits=lambda hs: _fit(hs, budget) == hs,
            )
        timings["search"] = _ms(start)
        return _Found(hits=hits, kept=kept, cut=cut, cleared=cleared)

    def _rerank_search(
        self,
        collection: str,
        question: str,
        vector: list[float],
        threshold: float | None,
        budget: Budget,
        filters: Mapping[str, FilterValue] | None,
        search: SearchMode,
        timings: dict[str, float],
        *,
        candidates: int,
    ) -> _Found:
        """The top ``candidates`` dense hits (and, hybrid, the keyword hits) ordered by the
        reranker; those whose relevance reaches ``threshold`` are the conformal set. Keyword
        hits only add candidates, so the set can only grow past the calibrated one."""
        assert self.reranking is not None
        start = time.perf_counter()
        hits = self.store.search(collection, vector, limit=candidates, filters=filters or None)
        if search == "hybrid":
            seen = {h.id for h in hits}
            words = self.store.keyword_search(
                collection, question, vector, limit=self._keyword_hits, filters=filters or None
            )
            hits = hits + [w for w in words if w.id not in seen]
        timings["search"] = _ms(start)
        start = time.perf_counter()
        ranked = reranked(self.reranking.reranker, question, hits)
        timings["rerank"] = _ms(start)
        passed = (
            ranked[: budget.chunks]
            if threshold is None
            else [h for h in ranked if (h.relevance or 0.0) >= threshold]
        )
        kept = _fit(passed, budget)
        return _Found(hits=hits, kept=kept, cut=len(kept) < len(passed), cleared=len(kept))

    def _reranked(self, collection: str, calibration: Calibration | None) -> Calibration | None:
        """The calibration on the reranker's scale; refuses a reranked request this server or
        this calibration cannot serve."""
        if self.reranking is None:
            raise RerankerUnavailable(
                "rerank: this server has no trained reranker; train one with `covrag "
                f"train-reranker --collection {collection}` (it is written to "
                "COVRAG_RERANKER_DIR) and restart, or search without rerank"
            )
        if calibration is None:
            return None
        if calibration.rerank_version != self.reranking.reranker.version:
            taken = "with another reranker" if calibration.rerank_version else "without one"
            raise RerankerUnavailable(
                f"rerank: the calibration of collection {collection!r} (version "
                f"{calibration.version}) was taken {taken}, so no threshold on this reranker's "
                "scores is calibrated; calibrate the collection again (the server's reranker "
                "scores the calibration questions too), or search without rerank"
            )
        return calibration.reranked()

    def _threshold(
        self,
        collection: str,
        calibration: Calibration | None,
        alpha: float | None,
        groups: tuple[str, ...],
        whole: Calibration | None,
    ) -> tuple[GroupQuantile | None, float | None]:
        """(``groups``' q̂ or None, α applied) — where α becomes a score threshold.

        ``calibration`` is on the request's scale, ``whole`` the collection's calibration as
        taken: its size bounds α on every scale (where a scale's own questions are too few
        for α, its q̂ is infinite, as with too many misses)."""
        if calibration is None:
            if alpha is not None:
                raise NotCalibrated(
                    f"collection {collection!r} has no calibration, so alpha cannot apply; "
                    f"calibrate it first: `covrag calibrate --collection {collection} --from-qa "
                    f"FILE` (add --local when no server runs) or POST "
                    f"/v1/collections/{collection}/calibration"
                )
            return None, None
        bound = whole or calibration
        alpha = bound.default_alpha if alpha is None else alpha
        if not bound.min_alpha <= alpha < 1:
            raise AlphaOutOfRange(
                f"alpha={alpha:g} is outside the range this calibration supports "
                f"[{bound.min_alpha:.4g}, 1) (n={bound.n}: alpha must be ≥ 1/(n+1))"
            )
        quantile = self._quantile(calibration, alpha, groups)
        if math.isinf(quantile.qhat) and self._unreachable == "error":
            raise AlphaOutOfRange(
                f"alpha={alpha:g}: too many calibration questions missed their answer chunk "
                f"({calibration.misses} of {calibration.n}) for a finite threshold; "
                "use a larger alpha"
            )
        return quantile, alpha

    def _quantile(
        self, calibration: Calibration, alpha: float, groups: tuple[str, ...]
    ) -> GroupQuantile:
        """``groups``' q̂ at ``alpha``, or the pooled one (a fallback) when the calibration
        grouped its questions by another classifier than this one's."""
        if groups[0].startswith("kind:") and calibration.kinds_version != self.kinds.version:
            return GroupQuantile(groups[0], 0, calibration.qhat(alpha), fallback=True)
        return calibration.groups_qhat(alpha, groups)


def _link_quantile(
    calibration: Calibration | None,
    alpha: float | None,
    groups: tuple[str, ...],
    filters: Mapping[str, FilterValue] | None,
) -> int | None:
    """k̂ for a question that may be multi-hop: the linked documents its context adds so that
    its last hop is in it with probability ≥ 1−α; None when nothing is calibrated for it (not
    in ``BRIDGE_GROUP``, too few labelled multi-hop questions for α, or a filtered search,
    which follows other links than the calibration's)."""
    if calibration is None or alpha is None or BRIDGE_GROUP not in groups or filters:
        return None
    return calibration.link_quantile(alpha)


def _fit(hits: list[ScoredChunk], budget: Budget) -> list[ScoredChunk]:
    """The best hits within the chunk and character budget (always at least the best one)."""
    kept: list[ScoredChunk] = []
    used = 0
    for hit in hits[: budget.chunks]:
        used += len(hit.text) + len(hit.title) + 8
        if kept and used > budget.chars:
            break
        kept.append(hit)
    return kept


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
