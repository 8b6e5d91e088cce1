"""The paired comparison behind "answers more questions correctly" (``covrag eval qa``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.eval_qa import Mode, QaResult, paired, sign_test
from bench import stages


@pytest.mark.parametrize(
    ("wins", "losses", "p"),
    [(0, 6, 2 / 64), (6, 0, 2 / 64), (1, 4, 12 / 32), (3, 3, 1.0), (0, 0, 1.0)],
)
def test_sign_test_matches_the_binomial_by_hand(wins: int, losses: int, p: float) -> None:
    assert sign_test(wins, losses) == pytest.approx(p)


def _result(qid: str, mode: Mode, right: bool, answerable: bool = True) -> QaResult:
    return QaResult(
        qid=qid,
        type="single" if answerable else "unanswerable",
        mode=mode,
        answer="x",
        answerable=answerable,
        abstained=False,
        em=right,
        f1=float(right),
        contains=right,
        rounds=1,
        llm_calls=1,
        prompt_tokens=1,
        completion_tokens=1,
        wall_ms=1.0,
        critic_scores=[None],
        timings_ms={},
    )


def test_paired_counts_discordant_answerable_questions_only() -> None:
    outcomes = {  # qid: (single right, full right)
        "a": (True, True),
        "b": (False, True),
        "c": (False, True),
        "d": (True, False),
        "e": (False, False),
    }
    modes: tuple[Mode, Mode] = ("single", "full")
    results = [
        _result(q, mode, right)
        for q, pair in outcomes.items()
        for mode, right in zip(modes, pair, strict=True)
    ]
    results += [_result("u", m, False, answerable=False) for m in modes]
    results.append(_result("only-in-full", "full", True))
    assert paired(results) == {
        "full_vs_single": {
            "questions": 5,
            "only_this_right": 2,
            "only_single_right": 1,
            "sign_test_p": 1.0,
        }
    }


def test_the_stage_benchmark_renders_every_figure_of_the_evaluation() -> None:
    """``bench/stages.py`` re-shapes ``costs()``; it once dropped ``paired`` and so crashed
    after its whole run."""
    timings = {"embed": 8.0, "search": 2.0, "reason": 900.0, "total": 911.0}
    results = [
        replace(_result(q, m, right=(q, m) != ("b", "single")), timings_ms=timings, wall_ms=911.0)
        for q in ("a", "b")
        for m in ("single", "conformal", "full")
    ]
    table = stages.markdown(stages.report(results))
    assert "| full | **non_llm** | 11.0 |" in table
    assert "Paired, full_vs_single (2 answerable questions): right only here 1," in table
