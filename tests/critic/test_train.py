"""Training: grouped split, balancing, metrics, and seeded, better-than-chance critics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import roc_auc_score

from critic import CriticInput
from critic.cross_encoder import CrossEncoderModel, read_info
from critic.features import FeaturesCritic, feature_matrix
from critic.metrics import (
    Costs,
    auroc,
    best_tau,
    expected_calibration_error,
    expected_cost,
    unanswerable_floor,
)
from critic.train import (
    downsample,
    load_rows,
    out_of_fold_scores,
    row_input,
    split_by_question,
    train_features,
)
from retrieval.types import Document
from tests.critic.conftest import COSTS, train_tiny_cross_encoder


def test_split_is_grouped_seeded_and_holds_out_a_quarter(rows: list[dict[str, Any]]) -> None:
    train, test = split_by_question(rows, seed=3)
    train_ids, test_ids = {r["qid"] for r in train}, {r["qid"] for r in test}
    assert not train_ids & test_ids
    assert len(train) + len(test) == len(rows)
    assert len(test_ids) == round(0.25 * len(train_ids | test_ids))
    assert split_by_question(rows, seed=3) == (train, test)
    assert {r["qid"] for r in split_by_question(rows, seed=4)[1]} != test_ids


def test_downsample_balances_the_classes(rows: list[dict[str, Any]]) -> None:
    kept = downsample(rows, seed=0)
    positives = sum(r["label"] for r in kept)
    assert (
        positives
        == len(kept) - positives
        == min(sum(r["label"] for r in rows), sum(1 - r["label"] for r in rows))
    )
    assert downsample(rows, seed=0) == kept


def test_auroc_matches_sklearn_with_ties() -> None:
    scores = [0.1, 0.4, 0.4, 0.35, 0.8, 0.8, 0.2, 0.9]
    labels = [0, 0, 1, 1, 1, 0, 0, 1]
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    with pytest.raises(ValueError):
        auroc([0.1, 0.2], [1, 1])


def test_calibration_error() -> None:
    assert expected_calibration_error([0.25] * 4, [1, 0, 0, 0]) == pytest.approx(0.0)
    assert expected_calibration_error([0.9, 0.9, 0.1, 0.1], [0, 0, 1, 1]) == pytest.approx(0.9)


def test_tau_minimizes_expected_cost() -> None:
    scores, labels = [0.1, 0.3, 0.6, 0.7, 0.95], [0, 0, 1, 0, 1]
    costs = Costs(wrong_accept=1.0, false_reject=0.5, round=0.1)
    tau = best_tau(scores, labels, costs)
    grid = [i / 1000 for i in range(1001)]
    assert expected_cost(scores, labels, tau, costs) == pytest.approx(
        min(expected_cost(scores, labels, t, costs) for t in grid)
    )
    # a costly wrong accept pushes τ up; a costly extra round pulls it down
    assert best_tau(scores, labels, Costs(10.0, 0.5, 0.1)) >= tau
    assert best_tau(scores, labels, Costs(1.0, 0.5, 5.0)) <= tau


def test_features_training_is_seeded_and_beats_chance(rows: list[dict[str, Any]]) -> None:
    weights, metrics = train_features(rows, seed=0, costs=COSTS)
    again, _ = train_features(rows, seed=0, costs=COSTS)
    assert json.dumps(weights) == json.dumps(again)
    assert metrics.auroc > 0.75, metrics  # held-out questions only
    assert metrics.expected_cost < metrics.cost_accept_all
    assert weights["tau"] == metrics.tau
    assert weights["metrics"]["n_test"] == metrics.n_test
    assert json.dumps(train_features(rows, seed=1, costs=COSTS)[0]) != json.dumps(weights)


def test_weights_file_reproduces_its_metrics(
    rows: list[dict[str, Any]], features_weights: Path
) -> None:
    """The served critic scores the held-out rows exactly as training evaluated them."""
    recorded = json.loads(features_weights.read_text())["metrics"]
    critic = FeaturesCritic(features_weights)
    _, test = split_by_question(rows, seed=0)
    scores = critic.model.probabilities(feature_matrix([row_input(r) for r in test]))
    assert round(auroc(scores, [r["label"] for r in test]), 4) == recorded["auroc"]
    assert critic.tau == pytest.approx(recorded["tau"], abs=1e-4)


def test_load_rows_skips_and_names_bad_lines(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    path = tmp_path / "rows.jsonl"
    bad = [{"qid": "x"}, rows[1] | {"label": 2}, rows[2] | {"question": " "}]
    lines = [json.dumps(rows[0]), "", "{oops", *map(json.dumps, bad), json.dumps(rows[3])]
    path.write_text("\n".join(lines) + "\n")
    loaded, errors = load_rows(path)
    assert loaded == [rows[0], rows[3]]
    assert [e.split(": ")[0] for e in errors] == [f"rows.jsonl:{n}" for n in (3, 4, 5, 6)]
    assert "missing question" in errors[1]
    assert "label must be 0 or 1" in errors[2]


def test_cross_encoder_training_is_seeded(
    wiki_docs: list[Document], cross_encoder_dir: Path, tmp_path: Path
) -> None:
    """The fixture's recipe run again gives the same held-out metrics and the same scores."""
    metrics = train_tiny_cross_encoder(wiki_docs, tmp_path / "again")
    info = read_info(cross_encoder_dir)
    assert metrics.to_json() == info["metrics"]
    assert 0.0 <= info["tau"] <= 1.0
    items = [CriticInput("Who?", ["Ada Lovelace: a mathematician."], "Ada Lovelace")]
    first = CrossEncoderModel.load(cross_encoder_dir, device="cpu").predict(items)
    assert CrossEncoderModel.load(tmp_path / "again", device="cpu").predict(items) == first


def test_out_of_fold_scores_do_not_depend_on_the_questions_own_labels(
    rows: list[dict[str, Any]],
) -> None:
    """The unanswerable floor is taken on these: a question's score must come from a model
    that did not learn its label, or the floor is set on scores new questions will not get."""
    platt = {"a": 1.0, "b": 0.0}
    qid = str(rows[0]["qid"])
    flipped = [{**r, "label": 1 - r["label"]} if str(r["qid"]) == qid else r for r in rows]
    before = out_of_fold_scores(rows, 0, platt)
    after = out_of_fold_scores(flipped, 0, platt)
    own = [i for i, r in enumerate(rows) if str(r["qid"]) == qid]
    assert [after[i] for i in own] == pytest.approx([before[i] for i in own])
    assert after != pytest.approx(before)  # the other questions' models did learn the flip


def test_tau_floor_abstains_on_the_target_share_of_unanswerable_questions() -> None:
    """A question is abstained on only if every round of it scores below τ, so the floor is
    taken over each unanswerable question's best round."""
    rows = [
        {"qid": f"u{i}", "type": "unanswerable", "label": 0} for i in range(10) for _ in (0, 1)
    ] + [{"qid": "a", "type": "single", "label": 1}]
    best = [0.05 * (i + 1) for i in range(10)]  # u0 0.05 … u9 0.5
    scores = [s for b in best for s in (b / 2, b)] + [0.99]  # each question's 2nd round is best
    assert unanswerable_floor(rows, scores, 0.9) == pytest.approx((0.45 + 0.5) / 2)
    assert unanswerable_floor(rows, scores, 0.5) == pytest.approx((0.25 + 0.3) / 2)
    assert unanswerable_floor(rows, scores, 1.0) == pytest.approx((0.5 + 1.0) / 2)
    assert unanswerable_floor(rows, scores, 0.0) == 0.0
    assert unanswerable_floor(rows[-1:], scores[-1:], 0.9) == 0.0  # none unanswerable
    below = sum(
        max(scores[2 * i : 2 * i + 2]) < unanswerable_floor(rows, scores, 0.9) for i in range(10)
    )
    assert below == 9
