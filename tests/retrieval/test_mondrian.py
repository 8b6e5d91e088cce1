"""Group-conditional (Mondrian) calibration: each group's own q̂, the pooled one as an
announced fallback, and the question-kind classifier that picks a request's group."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import pytest

from retrieval.calibration import calibrate
from retrieval.calibration_set import CalibrationItem
from retrieval.conformal import Calibration, conformal_quantile
from retrieval.embed import Embedder
from retrieval.ingest import Ingestor
from retrieval.kinds import KINDS, SET_MISS, KindClassifier
from retrieval.retriever import Retriever
from retrieval.store import VectorStore
from retrieval.types import Budget, Document

QA = Path(__file__).resolve().parents[2] / "data" / "qa"


def _calibration(groups: dict[str, list[float]]) -> Calibration:
    pooled = sorted(s for scores in groups.values() for s in scores)
    return Calibration(
        collection="c",
        embedder="m",
        scores=pooled,
        source="test",
        version=1,
        changes_at=0,
        chunks_at=1,
        groups={g: sorted(s) for g, s in groups.items()},
    )


def test_a_group_takes_its_own_quantile_and_falls_back_when_too_small() -> None:
    single = [0.1 + 0.01 * i for i in range(40)]  # 40: finite q̂ at α = 0.05
    bridge = [0.5 + 0.01 * i for i in range(9)]  # 9: finite at 0.1, not at 0.05
    cal = _calibration({"kind:single": single, "kind:bridge": bridge})
    own = cal.group_qhat(0.1, "kind:bridge")
    assert (own.qhat, own.n, own.fallback) == (conformal_quantile(bridge, 0.1), 9, False)
    assert own.qhat > cal.qhat(0.1)  # the bridge questions need a lower similarity threshold
    # the single-hop questions, over-covered by the pooled q̂, keep it
    assert conformal_quantile(single, 0.1) < cal.qhat(0.1)
    assert cal.group_qhat(0.1, "kind:single").qhat == cal.qhat(0.1)
    small = cal.group_qhat(0.05, "kind:bridge")
    assert (small.qhat, small.n, small.fallback) == (cal.qhat(0.05), 9, True)
    unknown = cal.group_qhat(0.1, "group:acme")
    assert (unknown.qhat, unknown.n, unknown.fallback) == (cal.qhat(0.1), 0, True)


def test_a_question_in_several_groups_takes_the_largest_quantile_or_none() -> None:
    single = [0.1 + 0.01 * i for i in range(40)]
    bridge = [0.5 + 0.01 * i for i in range(9)]
    cal = _calibration({"kind:single": single, "kind:bridge": bridge})
    both = cal.groups_qhat(0.1, ("kind:single", "kind:bridge"))
    assert both == cal.group_qhat(0.1, "kind:bridge")  # bridge's q̂ is the larger one
    assert cal.groups_qhat(0.1, ("kind:single",)) == cal.group_qhat(0.1, "kind:single")
    # at α = 0.05 bridge has no q̂ of its own: the request falls back and names bridge
    strict = cal.groups_qhat(0.05, ("kind:single", "kind:bridge"))
    assert (strict.group, strict.n, strict.fallback) == ("kind:bridge", 9, True)
    assert strict.qhat == max(cal.qhat(0.05), conformal_quantile(single, 0.05))


def test_a_group_is_raised_to_its_labelled_kinds_own_quantile() -> None:
    """Half the comparison group is easy single-hop questions: the group's q̂ covers its
    comparisons less than 1 − α, so it is raised to the labelled comparisons' own. A
    labelled kind too small for α, or multi-hop (the links' to cover), raises nothing."""
    easy = [0.1 + 0.001 * i for i in range(20)]
    hard = [0.4 + 0.01 * i for i in range(20)]
    cal = replace(
        _calibration({"kind:comparison": easy + hard}),
        labelled={
            "kind:comparison|single": easy,
            "kind:comparison|comparison": hard,
            "kind:comparison|bridge": [0.9] * 20,
        },
    )
    raised = cal.group_qhat(0.1, "kind:comparison")
    assert raised.qhat == conformal_quantile(hard, 0.1) > conformal_quantile(easy + hard, 0.1)
    assert not raised.fallback
    # at α = 0.04, 20 labelled comparisons have no q̂ of their own: the group's applies
    assert cal.group_qhat(0.04, "kind:comparison").qhat == conformal_quantile(easy + hard, 0.04)


def test_the_link_quantile_is_the_labelled_multi_hop_questions_rank() -> None:
    ranks = sorted([0.0] * 12 + [1.0] * 4 + [2.0, math.inf])
    cal = replace(_calibration({"kind:single": [0.1] * 18}), links=ranks, link_from=5)
    assert cal.link_quantile(0.2) == 1  # ⌈19·0.8⌉ = 16th: the last 1
    assert cal.link_quantile(0.15) == 2  # the 17th
    assert cal.link_quantile(0.1) is None  # the 18th: never named
    assert _calibration({"kind:single": [0.1] * 18}).link_quantile(0.5) is None


def test_groups_survive_the_round_trip_misses_included() -> None:
    cal = replace(
        _calibration({"kind:single": [0.2, math.inf], "group:acme": [0.3]}),
        labelled={"kind:single|bridge": [math.inf]},
        links=[1.0, math.inf],
        link_from=5,
    )
    again = Calibration.from_json(json.loads(json.dumps(cal.to_json())))
    assert again.groups == cal.groups and again == cal
    old = {k: v for k, v in cal.to_json().items() if k != "groups"}  # taken before groups
    assert Calibration.from_json(old).group_qhat(0.5, "kind:single").fallback


def test_the_kind_classifier_is_accurate_and_fast_on_held_out_questions() -> None:
    """docs/conformal.md reports these figures; the classifier never saw test.jsonl."""
    rows = [json.loads(line) for line in (QA / "test.jsonl").read_text().splitlines()]
    model = KindClassifier.load()
    start = time.perf_counter()
    predicted = [model.kind(r["question"]) for r in rows]
    per_question_ms = (time.perf_counter() - start) * 1000 / len(rows)
    right = [p == r["type"] for p, r in zip(predicted, rows, strict=True)]
    assert sum(right) / len(rows) >= 0.85
    assert all(ok for ok, r in zip(right, rows, strict=True) if r["type"] == "comparison")
    assert set(predicted) == set(KINDS)
    assert per_question_ms <= 2.0
    assert model.groups("Who?", "acme") == ("group:acme",)
    assert model.groups("Which river is longer, the Nile or the Amazon?") == ("kind:comparison",)


def test_a_kinds_set_holds_the_true_kind_at_the_promised_rate() -> None:
    """The sets' class-conditional guarantee, checked on questions the classifier never saw
    (dev and test): each kind is in its questions' sets at least 1 − SET_MISS of the time,
    up to sampling error, while a single-hop question's set stays small."""
    rows = [
        json.loads(line)
        for name in ("dev.jsonl", "test.jsonl")
        for line in (QA / name).read_text().splitlines()
    ]
    model = KindClassifier.load()
    sets = [model.groups(r["question"]) for r in rows]
    for kind in KINDS:
        mine = [s for s, r in zip(sets, rows, strict=True) if r["type"] == kind]
        held = sum(f"kind:{kind}" in s for s in mine) / len(mine)
        assert held >= 1 - SET_MISS - 0.05, (kind, held)
    singles = [s for s, r in zip(sets, rows, strict=True) if r["type"] == "single"]
    assert sum(len(s) for s in singles) / len(singles) < 1.6


def test_a_request_gets_its_groups_threshold_and_says_when_it_cannot(
    store: VectorStore, embedder: Embedder, wiki_sample: list[Document]
) -> None:
    Ingestor(store, embedder, chunk_words=120, chunk_overlap=20).ingest("c", wiki_sample)
    items = [
        CalibrationItem(
            id=d.id,
            question=f"What is {d.title}?",
            gold_doc_ids=(d.id,),
            group="acme" if i < 10 else "",
        )
        for i, d in enumerate(wiki_sample)
    ]
    cal = calibrate(store, embedder, "c", items, source="test", default_alpha=0.1)
    assert len(cal.groups["group:acme"]) == 10
    kinds = KindClassifier.load()
    in_sets = sum(len(kinds.groups(it.question)) for it in items)
    assert sum(len(v) for k, v in cal.groups.items() if k.startswith("kind:")) == in_sets
    retriever = Retriever(store, embedder)
    budget = Budget(chunks=50, chars=10**6)

    acme = retriever.retrieve("c", "What is Somaliland?", alpha=0.1, budget=budget, group="acme")
    assert acme.calibration is not None
    assert (acme.calibration.group, acme.calibration.group_n) == ("group:acme", 10)
    assert acme.calibration.groups == ("group:acme",)
    assert not acme.calibration.fallback and acme.coverage_guaranteed
    own = max(conformal_quantile(cal.groups["group:acme"], 0.1), cal.qhat(0.1))
    assert acme.threshold == pytest.approx(1 - own, abs=1e-5)
    # 10 questions cannot give a finite q̂ at α = 0.05: the pooled one, and no guarantee
    strict = retriever.retrieve("c", "What is Somaliland?", alpha=0.05, budget=budget, group="acme")
    assert strict.calibration is not None and strict.calibration.fallback
    assert not strict.coverage_guaranteed
    assert strict.threshold == pytest.approx(1 - cal.qhat(0.05), abs=1e-5)
    # no group: the question's kind
    kind = retriever.retrieve("c", "What is Somaliland?", alpha=0.1, budget=budget)
    assert kind.calibration is not None and kind.calibration.group == "kind:single"
    assert kind.calibration.group_n == len(cal.groups["kind:single"])
    assert kind.calibration.groups == kinds.groups("What is Somaliland?")
    assert not kind.calibration.fallback
    # a question that may be multi-hop gets its kinds' largest q̂, and no guarantee even where
    # that group has a q̂ of its own when no labelled multi-hop question calibrated its links
    Ingestor(store, embedder, chunk_words=120, chunk_overlap=20).ingest("m", wiki_sample)
    hops = [
        replace(it, question=f"Who founded the company that built the tower in {it.id}?")
        for it in items
    ]
    assert all("kind:bridge" in retriever.kinds.groups(it.question) for it in hops)
    calibrate(store, embedder, "m", hops, source="test", default_alpha=0.1)
    multi = retriever.retrieve("m", hops[0].question, alpha=0.1, budget=budget)
    assert multi.calibration is not None and not multi.calibration.fallback
    assert multi.threshold is not None and not multi.coverage_guaranteed
    assert "kind:bridge" in multi.calibration.groups  # the response says why
    assert multi.calibration.links is None
    # the shift watch's reference: each question's top-1 similarity and multi-hop score
    assert len(cal.top_similarities) == len(cal.multi_hop) == len(items)
    assert all(0 <= m <= 1 for m in cal.multi_hop)
    # a server with another classifier does not use the kind groups it did not form
    other = replace(retriever.kinds, version="another")
    changed = Retriever(store, embedder, kinds=other)
    old = changed.retrieve("c", "What is Somaliland?", alpha=0.1, budget=budget)
    assert old.calibration is not None and old.calibration.fallback
    assert not old.coverage_guaranteed
    assert (
        changed.retrieve(
            "c", "What is Somaliland?", alpha=0.1, budget=budget, group="acme"
        ).calibration
        == acme.calibration
    )  # a caller's group is no classifier's
