"""The relative scale (``RelativeScale``): a chunk's share of its question's top dense hits.

What must hold: the shares order chunks as the cosine does and leave room for "none of
these"; a calibration keeps every question's relative score, computed from the same searches;
and, on the real embedder and Qdrant Edge, a query passes exactly the candidates whose share
reaches the calibrated threshold, so a held-out question is covered exactly when its
calibration-time score says so. A calibration taken before the scale existed stays on the
cosine.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import pytest

from retrieval.calibration import calibrate, load_calibration
from retrieval.calibration_set import CalibrationItem, ItemScore, on_relative_scale, score_items
from retrieval.conformal import Calibration, RelativeScale, conformal_quantile, score_threshold
from retrieval.embed.base import Embedder
from retrieval.ingest import Ingestor
from retrieval.kinds import SINGLE_GROUP, relative_keys
from retrieval.retriever import Retriever
from retrieval.store import EdgeStore
from retrieval.types import Budget, Document
from tests.retrieval.questions import first_sentence_items

BIG = Budget(chunks=20, chars=10**7)
SCALE = RelativeScale()


def test_shares_follow_the_cosine_and_leave_room_for_none_of_these() -> None:
    cosines = [0.9, 0.6, 0.55, 0.5]
    shares = SCALE.shares(cosines)
    assert shares == sorted(shares, reverse=True)
    assert 0 < sum(shares) < 1
    assert shares[0] > 0.75  # a hit that stands out keeps most of it
    # two near ties split it: neither alone looks certain
    tied = SCALE.shares([0.8, 0.8])
    assert tied[0] == pytest.approx(tied[1]) and tied[0] < 0.5
    # hits all far below the floor leave nearly everything to "none of these"
    assert sum(SCALE.shares([0.3, 0.25, 0.2])) < 0.05
    assert SCALE.shares([]) == []
    # only the top candidates have a share
    assert len(SCALE.shares([0.5] * 30)) == SCALE.candidates


def test_an_items_relative_score_is_its_answer_chunks_share() -> None:
    sims = [0.8, 0.7, 0.6] + [0.3] * 20
    shares = SCALE.shares(sims)
    second = on_relative_scale(ItemScore("q", 0.3, 2, sims), SCALE)
    assert second.score == pytest.approx(1 - shares[1]) and second.rank == 2
    assert second.similarities == shares
    # beyond the candidates (or not found), a query could not keep it: +∞
    beyond = on_relative_scale(ItemScore("q", 0.7, 12, sims), SCALE)
    assert math.isinf(beyond.score) and beyond.rank is None
    missed = on_relative_scale(ItemScore("q", math.inf, None, sims), SCALE)
    assert math.isinf(missed.score)


@pytest.fixture(scope="module")
def store(
    wiki_sample: list[Document], embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EdgeStore]:
    store = EdgeStore(tmp_path_factory.mktemp("relative"))
    ingestor = Ingestor(store, embedder, chunk_words=160, chunk_overlap=32)
    for name in ("c", "old"):
        ingestor.ingest(name, wiki_sample)
    yield store
    store.close()


def test_a_query_passes_what_clears_the_calibrated_share(
    store: EdgeStore, embedder: Embedder, wiki_sample: list[Document]
) -> None:
    items = first_sentence_items(wiki_sample)
    calibration = calibrate(store, embedder, "c", items, source="t", default_alpha=0.2)
    assert calibration.relative_scale == SCALE
    # the questions served on the scale: those the classifier calls single-hop only
    retriever = Retriever(store, embedder, score="relative")
    served = [it for it in items if retriever.kinds.groups(it.question) == (SINGLE_GROUP,)]
    assert 0 < len(served) < len(items)
    assert len(calibration.relative_scores) == len(served) == len(calibration.relative_top)
    scored = score_items(store, embedder, "c", served)
    expected = sorted(on_relative_scale(s, SCALE).score for s in scored)
    assert calibration.relative_scores == pytest.approx(expected)
    stored = load_calibration(store, "c")
    assert stored is not None and Calibration.from_json(stored.to_json()) == calibration

    question = served[0].question
    result = retriever.retrieve("c", question, alpha=0.2, budget=BIG)
    assert result.calibration is not None and result.calibration.scale == "relative"
    quantile = calibration.relative().groups_qhat(0.2, result.calibration.groups)
    assert result.threshold == score_threshold(quantile.qhat)
    # the critic's margin stays on the cosine it was trained on
    on_cosine = calibration.groups_qhat(0.2, result.calibration.groups)
    assert result.cosine_threshold == score_threshold(on_cosine.qhat)
    shares = [h.relevance for h in result.hits]
    assert all(s is not None and s >= result.threshold for s in shares)
    # the candidates that did not pass are below the threshold
    every = store.search("c", result.vector, limit=SCALE.candidates)
    all_shares = SCALE.shares([h.score for h in every])
    kept = {h.id for h in result.hits}
    dropped = [s for h, s in zip(every, all_shares, strict=True) if h.id not in kept]
    assert all(s < result.threshold for s in dropped)
    # the cosine scale on the same calibration thresholds the similarity
    cosine = Retriever(store, embedder).retrieve("c", question, alpha=0.2, budget=BIG)
    assert cosine.calibration is not None and cosine.calibration.scale == "cosine"
    assert all(h.relevance is None for h in cosine.hits)
    assert cosine.cosine_threshold == cosine.threshold == score_threshold(on_cosine.qhat)


def test_only_questions_served_on_the_scale_are_calibrated_and_thresholded_on_it(
    store: EdgeStore, embedder: Embedder
) -> None:
    """A question that may be a comparison or multi-hop stays on the cosine (the other
    article it needs takes a share of the top hits); each relative group holds exactly the
    calibration questions served in it."""
    assert relative_keys([SINGLE_GROUP]) == {SINGLE_GROUP}
    assert relative_keys([SINGLE_GROUP, "kind:comparison"]) == set()
    assert relative_keys(["group:acme"]) == {"group:acme"}
    assert relative_keys(["kind:bridge", "group:acme"]) == {"group:acme"}
    items = [
        CalibrationItem(id="a", question="What is the capital of Somaliland?", gold_doc_ids=("x",)),
        CalibrationItem(
            id="b",
            question="Which is taller, the Eiffel Tower or Mount Everest?",
            gold_doc_ids=("Eiffel Tower", "Mount Everest"),
            kind="comparison",
        ),
        CalibrationItem(
            id="c", question="What is the capital of Somaliland?", gold_doc_ids=("x",), group="acme"
        ),
    ]
    retriever = Retriever(store, embedder, score="relative")
    calibration = calibrate(
        store, embedder, "old", items, source="t", default_alpha=0.5, replace_smaller=True
    )
    kinds = [set(retriever.kinds.groups(it.question)) for it in items]
    assert kinds[0] == {SINGLE_GROUP} and SINGLE_GROUP not in kinds[1]
    assert calibration.relative_groups.keys() == {SINGLE_GROUP, "group:acme"}
    assert len(calibration.relative_groups[SINGLE_GROUP]) == 2  # a, and c's own kind
    assert len(calibration.relative_scores) == 2  # b is served on the cosine only
    result = retriever.retrieve("old", items[1].question, alpha=0.5, budget=BIG)
    assert result.calibration is not None and result.calibration.scale == "cosine"
    acme = retriever.retrieve("old", items[0].question, alpha=0.5, budget=BIG, group="acme")
    assert acme.calibration is not None and acme.calibration.scale == "relative"


def test_a_held_out_question_is_covered_exactly_when_its_relative_score_says(
    store: EdgeStore, embedder: Embedder, wiki_sample: list[Document]
) -> None:
    items = first_sentence_items(wiki_sample)
    random.Random(2).shuffle(items)
    cal, test = items[: len(items) // 2], items[len(items) // 2 :]
    scores = [on_relative_scale(s, SCALE).score for s in score_items(store, embedder, "c", test)]
    calibration = calibrate(
        store, embedder, "c", cal, source="t", default_alpha=0.3, replace_smaller=True
    )
    qhat = conformal_quantile(calibration.relative_scores, 0.3)
    assert math.isfinite(qhat)
    retriever = Retriever(store, embedder, score="relative")
    agree = 0
    for item, score in zip(test, scores, strict=True):
        result = retriever.retrieve("c", item.question, alpha=0.3, budget=BIG, group="pooled")
        covered = any(h.doc_id in item.gold_doc_ids for h in result.hits)
        agree += covered == (score <= qhat)
    assert agree == len(test)


def test_a_calibration_from_before_the_scale_stays_on_the_cosine(
    store: EdgeStore, embedder: Embedder, wiki_sample: list[Document]
) -> None:
    items = first_sentence_items(wiki_sample)
    calibration = calibrate(store, embedder, "old", items, source="t", default_alpha=0.2)
    data = calibration.to_json()
    for key in ("relative_scale", "relative_scores", "relative_groups", "relative_labelled"):
        data.pop(key)
    store.update_metadata("old", {"calibration": data})
    result = Retriever(store, embedder, score="relative").retrieve(
        "old", items[0].question, alpha=0.2, budget=BIG
    )
    assert result.calibration is not None and result.calibration.scale == "cosine"
    quantile = calibration.groups_qhat(0.2, result.calibration.groups)
    assert result.threshold == score_threshold(quantile.qhat)
