"""QA evaluation of the three modes, side by side in one run (``covrag eval qa``).

- ``single``: plain top-k retrieval (the calibration ignored), one reasoner call.
- ``conformal``: the conformal filter's context, one reasoner call.
- ``full``: conformal retrieval, the critic, up to ``max_rounds`` rounds, abstention.

Answerable questions are scored by EM / F1 / containment against their gold aliases; for
unanswerable ones the right outcome is to abstain. Abstention precision = the share of a mode's
abstentions where single-round RAG was wrong (or the question has no answer). A correct answer
(for the cost per correct answer) = an answerable question answered, not abstained, with a gold
alias in it.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from app.generator import GeneratorError
from app.pipeline import InvalidQuery, LoopPolicy, Pipeline, QueryParams
from app.scoring import contains, exact_match, f1
from critic.train import auroc
from retrieval.jsonl import question_of, read_jsonl

Mode = Literal["single", "conformal", "full"]
MODES: tuple[Mode, ...] = ("single", "conformal", "full")


@dataclass(frozen=True, slots=True)
class QaResult:
    """One question answered in one mode."""

    qid: str
    type: str
    mode: Mode
    answer: str
    answerable: bool
    abstained: bool
    em: bool
    f1: float
    contains: bool
    rounds: int
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    wall_ms: float
    critic_scores: list[float | None]
    #: The pipeline's own stage times, as ``/v1/query`` reports them.
    timings_ms: dict[str, float]


@dataclass(frozen=True, slots=True)
class Failure:
    """A question left out of the comparison: the pipeline refused it or the generator failed
    it in ``mode``."""

    qid: str
    mode: Mode
    error: str


def _setup(
    pipeline: Pipeline, mode: Mode, question: str, collection: str, top_k: int
) -> tuple[QueryParams, LoopPolicy]:
    if mode == "full":
        params = QueryParams(question=question, collection=collection)
        return params, pipeline.default_policy(params)
    params = QueryParams(
        question=question,
        collection=collection,
        top_k=top_k if mode == "single" else None,
        conformal=mode == "conformal",
    )
    return params, LoopPolicy(max_rounds=1, critic=None, tau=1.0)


async def run_modes(
    pipeline: Pipeline,
    questions: Sequence[dict[str, Any]],
    modes: Sequence[Mode],
    *,
    collection: str,
    top_k: int = 5,
    concurrency: int = 2,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[QaResult], list[Failure]]:
    """Every question in every mode (each question's modes back to back, for fair timing).

    A question the pipeline refuses (too long) or the generator fails (a timeout, a worker
    gone, a prompt over the model's context) fails that question, not an hour's run: it leaves
    every mode's results, so the modes are still compared on the same questions, and comes
    back as a ``Failure``.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(qa: dict[str, Any], mode: Mode) -> QaResult | Failure:
        params, policy = _setup(pipeline, mode, qa["question"], collection, top_k)
        try:
            async with gate:
                start = time.perf_counter()
                outcome = await pipeline.run(params, policy)
                wall = (time.perf_counter() - start) * 1000
        except (InvalidQuery, GeneratorError) as exc:
            return Failure(qa["id"], mode, f"{type(exc).__name__}: {exc}")
        finally:
            if progress is not None:
                progress(1)
        golds = [str(a) for a in qa.get("answers") or []]
        answer = outcome.answer
        return QaResult(
            qid=qa["id"],
            type=qa.get("type", ""),
            mode=mode,
            answer=answer,
            answerable=bool(golds),
            abstained=outcome.abstained,
            em=bool(golds) and not outcome.abstained and exact_match(answer, golds),
            f1=f1(answer, golds) if golds and not outcome.abstained else 0.0,
            contains=bool(golds) and not outcome.abstained and contains(answer, golds),
            rounds=len(outcome.rounds),
            llm_calls=outcome.llm_calls,
            prompt_tokens=outcome.usage.prompt,
            completion_tokens=outcome.usage.completion,
            wall_ms=round(wall, 1),
            critic_scores=[r.critic_score for r in outcome.rounds],
            timings_ms=outcome.timings_ms,
        )

    done = await asyncio.gather(*(one(qa, mode) for qa in questions for mode in modes))
    failures = [d for d in done if isinstance(d, Failure)]
    failed = {f.qid for f in failures}
    return [d for d in done if isinstance(d, QaResult) and d.qid not in failed], failures


def load_questions(
    paths: Sequence[Path], per_type: int | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """QA rows with an id and a question — at most ``per_type`` of each question type per file,
    in file order — and the malformed lines skipped."""

    def parse(row: dict[str, Any], _: int) -> dict[str, Any]:
        question_of(row)
        str(row["id"])
        return row

    kept: list[dict[str, Any]] = []
    errors: list[str] = []
    for path in paths:
        rows, bad = read_jsonl(path, parse)
        errors += bad
        seen: Counter[str] = Counter()
        for row in rows:
            seen[str(row.get("type", ""))] += 1
            if per_type is None or seen[str(row.get("type", ""))] <= per_type:
                kept.append(row)
    return kept, errors


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def critic_auroc(results: Sequence[QaResult]) -> dict[str, Any] | None:
    """How well the critic's round-0 score predicts a right round-0 answer, on these questions.

    ``full`` round 0 runs the same prompt as ``conformal`` (temperature 0), so the conformal
    mode's correctness labels the full mode's first critic score; unanswerable questions count
    as wrong. None without both modes or without both outcomes.
    """
    right = {r.qid: r.contains for r in results if r.mode == "conformal"}
    pairs = [
        (r.critic_scores[0], int(right[r.qid]))
        for r in results
        if r.mode == "full"
        and r.qid in right
        and r.critic_scores
        and r.critic_scores[0] is not None
    ]
    labels = [y for _, y in pairs]
    if not pairs or len(set(labels)) < 2:
        return None
    return {"auroc": auroc([s for s, _ in pairs], labels), "n": len(pairs), "right": sum(labels)}


def summarize(results: Sequence[QaResult]) -> dict[str, Any]:
    """Per mode and question type, plus the abstention figures that need the single mode."""
    single_right = {r.qid for r in results if r.mode == "single" and r.contains}
    out: dict[str, Any] = {}
    for mode in MODES:
        rows = [r for r in results if r.mode == mode]
        if not rows:
            continue
        by_type: dict[str, Any] = {}
        for kind in [*sorted({r.type for r in rows}), "answerable"]:
            part = [r for r in rows if (r.answerable if kind == "answerable" else r.type == kind)]
            if not part:
                continue
            by_type[kind] = {
                "n": len(part),
                "em": statistics.mean(r.em for r in part),
                "f1": statistics.mean(r.f1 for r in part),
                "contains": statistics.mean(r.contains for r in part),
                "abstain": statistics.mean(r.abstained for r in part),
                "rounds": statistics.mean(r.rounds for r in part),
                "llm_calls": statistics.mean(r.llm_calls for r in part),
                "wall_p50_ms": _pct([r.wall_ms for r in part], 0.5),
                "wall_p95_ms": _pct([r.wall_ms for r in part], 0.95),
            }
        abstained = [r for r in rows if r.abstained]
        answered = [r for r in rows if r.answerable and not r.abstained]
        right_single = [r for r in rows if r.qid in single_right]
        out[mode] = {
            "by_type": by_type,
            "abstention_precision": statistics.mean(
                (not r.answerable) or r.qid not in single_right for r in abstained
            )
            if abstained
            else None,
            "abstain_when_single_right": statistics.mean(r.abstained for r in right_single)
            if right_single
            else None,
            "answered_accuracy": statistics.mean(r.contains for r in answered)
            if answered
            else None,
        }
    return out


def to_markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| mode | type | n | EM | F1 | contains | abstain | rounds | LLM calls "
        "| wall p50 / p95 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, data in summary.items():
        for kind, m in data["by_type"].items():
            lines.append(
                f"| {mode} | {kind} | {m['n']} | {m['em']:.3f} | {m['f1']:.3f} | "
                f"{m['contains']:.3f} | {m['abstain']:.3f} | {m['rounds']:.2f} | "
                f"{m['llm_calls']:.2f} | {m['wall_p50_ms']:.0f} / {m['wall_p95_ms']:.0f} |"
            )
    lines += ["", "| mode | abstention precision | abstain when single right | answered accuracy |"]
    lines.append("|---|---|---|---|")
    for mode, data in summary.items():
        cells = [
            "—" if data[k] is None else f"{data[k]:.3f}"
            for k in ("abstention_precision", "abstain_when_single_right", "answered_accuracy")
        ]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost(rows: Sequence[QaResult]) -> dict[str, Any]:
    """One mode's LLM calls, tokens and wall time, per question and per correct answer."""
    correct = sum(r.contains for r in rows)
    totals = {
        "llm_calls": sum(r.llm_calls for r in rows),
        "prompt_tokens": sum(r.prompt_tokens for r in rows),
        "completion_tokens": sum(r.completion_tokens for r in rows),
        "wall_s": sum(r.wall_ms for r in rows) / 1000,
    }
    answerable = [r for r in rows if r.answerable]
    unanswerable = [r for r in rows if not r.answerable]
    return {
        "questions": len(rows),
        "correct": correct,
        "accuracy_answerable": round(correct / len(answerable), 4) if answerable else None,
        "abstain_unanswerable": round(statistics.mean(r.abstained for r in unanswerable), 4)
        if unanswerable
        else None,
        "totals": {k: round(v, 1) for k, v in totals.items()},
        "per_question": {k: round(v / len(rows), 2) for k, v in totals.items()},
        "per_correct": {k: round(v / correct, 2) if correct else None for k, v in totals.items()},
    }


def costs(results: Sequence[QaResult]) -> dict[str, Any]:
    """``cost`` of every mode in ``results``, and each mode's wall time against plain top-k's
    (in total and per correct answer): the ratios of the performance target; and ``paired``."""
    modes = {m: cost(rows) for m in MODES if (rows := [r for r in results if r.mode == m])}
    ratios: dict[str, float] = {}
    if "single" in modes:
        base = modes["single"]
        for m in modes.keys() - {"single"}:
            c = modes[m]
            ratios[f"{m}_vs_single_wall"] = round(
                c["totals"]["wall_s"] / base["totals"]["wall_s"], 3
            )
            if c["per_correct"]["wall_s"] and base["per_correct"]["wall_s"]:
                ratios[f"{m}_vs_single_wall_per_correct"] = round(
                    c["per_correct"]["wall_s"] / base["per_correct"]["wall_s"], 3
                )
    return {"modes": modes, "ratios": dict(sorted(ratios.items())), "paired": paired(results)}


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: how likely a split at least this uneven is if neither side
    is better (ties, the questions both got right or both wrong, carry no information)."""
    n = wins + losses
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(results: Sequence[QaResult]) -> dict[str, Any]:
    """Each mode against plain top-k question by question: the ones only it got right, the ones
    only plain got right, and the sign test's p. A few more right answers in total can be
    noise; this says how likely."""
    right = {(r.mode, r.qid): r.contains for r in results if r.answerable}
    out: dict[str, Any] = {}
    for mode in (m for m in MODES if m != "single"):
        both = [q for m, q in right if m == mode and ("single", q) in right]
        if not both:
            continue
        wins = sum(right[mode, q] and not right["single", q] for q in both)
        losses = sum(right["single", q] and not right[mode, q] for q in both)
        out[f"{mode}_vs_single"] = {
            "questions": len(both),
            "only_this_right": wins,
            "only_single_right": losses,
            "sign_test_p": round(sign_test(wins, losses), 4),
        }
    return out


def costs_markdown(report: dict[str, Any]) -> str:
    """``costs`` as a table, one row a mode, and the ratios and paired tests under it."""
    keys = ("llm_calls", "prompt_tokens", "completion_tokens", "wall_s")
    lines = [
        "| mode | questions | correct | accuracy (answerable) | abstain (unanswerable) "
        "| LLM calls / q | prompt tok / q | completion tok / q | wall s / q "
        "| LLM calls / correct | prompt tok / correct | completion tok / correct "
        "| wall s / correct |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, c in report["modes"].items():
        q, k = c["per_question"], c["per_correct"]
        lines.append(
            f"| {mode} | {c['questions']} | {c['correct']} | {c['accuracy_answerable']} "
            f"| {c['abstain_unanswerable']} | "
            + " | ".join(str(q[x]) for x in keys)
            + " | "
            + " | ".join("—" if k[x] is None else str(k[x]) for x in keys)
            + " |"
        )
    if report["ratios"]:
        ratios = ", ".join(f"{k} {v}" for k, v in report["ratios"].items())
        lines += ["", f"Ratios (same run): {ratios}"]
    for name, p in report["paired"].items():
        lines += [
            "",
            f"Paired, {name} ({p['questions']} answerable questions): right only here "
            f"{p['only_this_right']}, right only in single {p['only_single_right']}, "
            f"two-sided sign test p {p['sign_test_p']}",
        ]
    return "\n".join(lines)


def results_json(results: Sequence[QaResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
