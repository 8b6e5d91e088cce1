"""Strict scoring, the paired comparison with naive RAG and the risk–coverage curve behind
"answers more questions right" (``covrag eval qa``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench import stages
from evaluation.qa import Mode, QaResult
from evaluation.qa_report import paired, risk_coverage, sign_test
from evaluation.scoring import others_compared, right_answer


@pytest.mark.parametrize(
    ("wins", "losses", "p"),
    [(0, 6, 2 / 64), (6, 0, 2 / 64), (1, 4, 12 / 32), (3, 3, 1.0), (0, 0, 1.0)],
)
def test_sign_test_matches_the_binomial_by_hand(wins: int, losses: int, p: float) -> None:
    assert sign_test(wins, losses) == pytest.approx(p)


def _result(
    qid: str,
    mode: Mode,
    right: bool,
    answerable: bool = True,
    abstained: bool = False,
    confidence: float = 0.0,
) -> QaResult:
    return QaResult(
        qid=qid,
        type="single" if answerable else "unanswerable",
        mode=mode,
        answer="x",
        answerable=answerable,
        abstained=abstained,
        right=right and not abstained,
        em=right,
        f1=float(right),
        contains=right,
        confidence=confidence,
        candidate="x",
        candidate_right=right,
        rounds=1,
        llm_calls=1,
        prompt_tokens=1,
        completion_tokens=1,
        wall_ms=1.0,
        critic_scores=[None],
        timings_ms={},
    )


@pytest.mark.parametrize(
    ("answer", "right"),
    [
        ("Goddard Space Flight Center", True),
        ("The Goddard Space Flight Center (GSFC) controls it.", True),
        ("goddard", True),
        ("NASA's Great Observatories", False),
        ("Many centres take part, and after a long history of changes it is now Goddard", False),
        ("Goddardian", False),
    ],
)
def test_a_right_answer_names_a_gold_alias_within_twelve_words(answer: str, right: bool) -> None:
    assert right_answer(answer, ["Goddard Space Flight Center", "Goddard"]) is right


def test_a_comparison_answer_naming_both_candidates_is_not_right() -> None:
    qa = {
        "answers": ["University of Göttingen", "Göttingen"],
        "gold_titles": ["University of Göttingen", "Princeton University"],
        "type": "comparison",
    }
    others = others_compared(qa)
    assert others == ["Princeton University"]
    assert right_answer("the University of Göttingen", qa["answers"], others)
    assert not right_answer("Göttingen or Princeton University", qa["answers"], others)
    # a title that holds the answer (or sits inside it) is never the other candidate
    assert others_compared({"answers": ["Everest"], "gold_titles": ["Mount Everest", "K2"]}) == [
        "K2"
    ]


def test_paired_counts_discordant_questions_right_and_wrong_apart() -> None:
    outcomes = {  # qid: (naive right, full right, full abstained)
        "a": (True, True, False),
        "b": (False, True, False),
        "c": (False, True, False),
        "d": (True, False, False),
        "e": (False, False, True),  # naive wrong, full abstains: one wrong answer fewer
    }
    results = []
    for q, (naive, full, abstained) in outcomes.items():
        results.append(_result(q, "naive", naive))
        results.append(_result(q, "full", full, abstained=abstained))
    results += [_result("u", "naive", False, answerable=False)]
    results += [_result("u", "full", False, answerable=False, abstained=True)]
    results.append(_result("only-in-full", "full", True))
    assert paired(results) == {
        "full_vs_naive": {
            "questions": 6,
            "right": {"only_this": 2, "only_naive": 1, "sign_test_p": 1.0},
            # d; and b, c, e and u, the last two abstained on
            "wrong": {"only_this": 1, "only_naive": 4, "sign_test_p": 0.375},
        }
    }


def test_risk_coverage_sweeps_the_confidence() -> None:
    rows = [
        _result("a", "full", True, confidence=0.9),
        _result("b", "full", False, confidence=0.8),
        _result("c", "full", True, confidence=0.7, abstained=True),  # its candidate counts
        _result("u", "full", False, answerable=False, confidence=0.1),
    ]
    curve = risk_coverage(rows)
    assert curve["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert curve["accuracy"] == [1.0, 0.5, 0.6667, 0.5]
    assert curve["aurc"] == pytest.approx(1 - (1.0 + 0.5 + 0.6667 + 0.5) / 4, abs=1e-4)


def test_the_stage_benchmark_renders_every_figure_of_the_evaluation() -> None:
    """``bench/stages.py`` re-shapes ``costs()``; it once dropped ``paired`` and so crashed
    after its whole run."""
    timings = {"embed": 8.0, "search": 2.0, "reason": 900.0, "total": 911.0}
    results = [
        replace(_result(q, m, right=(q, m) != ("b", "single")), timings_ms=timings, wall_ms=911.0)
        for q in ("a", "b")
        for m in ("naive", "conformal", "full")
    ]
    table = stages.markdown(stages.report(results))
    assert "| full | **non_llm** | 11.0 |" in table
    assert (
        "Paired, full_vs_naive, right answers (2 questions): only here 0, only in naive 0" in table
    )
