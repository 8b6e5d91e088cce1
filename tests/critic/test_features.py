"""Gold-free features, and strict validation of the features critic's weights file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from critic import CriticInput, CriticWeightsError, Signals, make_critic
from critic.features import FEATURE_NAMES, FeaturesCritic, features, is_refusal

PASSAGES = ["Eiffel Tower: a wrought-iron tower on the Champ de Mars in Paris, France."]


def _named(item: CriticInput) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, features(item).tolist(), strict=True))


def test_answer_support_in_the_passages() -> None:
    contained = _named(CriticInput("Where?", PASSAGES, "The Champ de Mars."))
    assert contained["contained"] == 1.0
    assert contained["support_max"] == contained["support_all"] == 1.0

    half = _named(CriticInput("Where?", [*PASSAGES, "Lyon: a city."], "Paris or Lyon"))
    assert half["contained"] == 0.0  # not verbatim in any one passage
    assert half["support_max"] == pytest.approx(1 / 3)  # "paris", "or", "lyon": 1 per passage
    assert half["support_all"] == pytest.approx(2 / 3)

    assert _named(CriticInput("Where?", PASSAGES, "Par"))["contained"] == 0.0  # whole words only
    assert _named(CriticInput("Where?", [], "Paris"))["support_max"] == 0.0


def test_answer_echoing_the_question() -> None:
    question = "Who designed the Eiffel Tower in Paris?"
    assert _named(CriticInput(question, PASSAGES, "Eiffel Tower"))["question_overlap"] == 1.0
    assert _named(CriticInput(question, PASSAGES, "Gustave Eiffel"))["question_overlap"] == 0.5
    assert _named(CriticInput(question, PASSAGES, "Sauvestre"))["question_overlap"] == 0.0


def test_signals_enter_as_given() -> None:
    signals = Signals(top_similarity=0.7, margin=0.2, truncated=True, round_index=2)
    named = _named(CriticInput("q", PASSAGES, "Paris", signals=signals))
    assert (named["top_similarity"], named["margin"], named["truncated"]) == (0.7, 0.2, 1.0)
    assert named["choice"] == 0.0
    assert named["round_index"] == 2.0


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "  ",
        "I cannot answer from the given passages.",
        "I don't know.",
        "Not enough information.",
    ],
)
def test_refusals(answer: str) -> None:
    assert is_refusal(answer)
    assert _named(CriticInput("q", PASSAGES, answer))["refusal"] == 1.0


@pytest.mark.parametrize("answer", ["Paris", "Knowledge is power", "1889"])
def test_answers_are_not_refusals(answer: str) -> None:
    assert not is_refusal(answer)


# --- weights validation ----------------------------------------------------------------------


def _valid() -> dict[str, Any]:
    n = len(FEATURE_NAMES)
    return {
        "version": 1,
        "feature_names": list(FEATURE_NAMES),
        "mean": [0.0] * n,
        "scale": [1.0] * n,
        "coef": [0.1] * n,
        "intercept": 0.0,
        "platt": {"a": 1.0, "b": 0.0},
        "tau": 0.5,
        "trained_on": "hand-written",
        "command": "",
        "metrics": {},
    }


def _with(**changes: Any) -> Callable[[], dict[str, Any]]:
    return lambda: _valid() | changes


CORRUPTIONS = {
    "wrong feature names": _with(feature_names=[*FEATURE_NAMES[:-1], "shoe_size"]),
    "missing feature": _with(feature_names=list(FEATURE_NAMES[:-1])),
    "short coef": _with(coef=[0.1] * (len(FEATURE_NAMES) - 1)),
    "NaN coef": _with(coef=[float("nan")] * len(FEATURE_NAMES)),
    "string mean": _with(mean=["0"] * len(FEATURE_NAMES)),
    "zero scale": _with(scale=[0.0] * len(FEATURE_NAMES)),
    "infinite intercept": _with(intercept=float("inf")),
    "tau above 1": _with(tau=1.5),
    "no tau": lambda: {k: v for k, v in _valid().items() if k != "tau"},
    "bad platt": _with(platt=[1.0, 0.0]),
    "platt without a": _with(platt={"b": 0.0}),
    "wrong version": _with(version=2),
    "metrics not a dict": _with(metrics=[]),
    "top level a list": lambda: [],  # type: ignore[dict-item]
}


def test_valid_weights_load_and_score(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text(json.dumps(_valid()))
    critic = FeaturesCritic(path)
    assert critic.tau == 0.5
    score = asyncio.run(critic.score(CriticInput("q", PASSAGES, "Paris")))
    assert 0.0 < score < 1.0


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_weights_are_refused(name: str, tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text(json.dumps(CORRUPTIONS[name]()))  # NaN/inf become JSON's NaN/Infinity
    with pytest.raises(CriticWeightsError, match=str(path)):
        make_critic("features", weights_path=path)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(CriticWeightsError, match="file not found"):
        make_critic("features", weights_path=tmp_path / "absent.json")


@pytest.mark.parametrize("content", [b"{not json", b"", b"\xff\xfe"])
def test_unreadable_weights_file(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_bytes(content)
    with pytest.raises(CriticWeightsError, match="not readable JSON"):
        FeaturesCritic(path)
