"""QA evaluation of every mode against naive RAG, side by side in one run (``covrag eval qa``).

- ``naive``: the reference a user would pick instead: plain top-3 retrieval, a plain prompt
  ("Answer the question using the context. Reply with a short answer only."), a plain-text
  reply of at most 48 tokens; no filter, no critic, never abstains.
- ``single``: covrag's reasoner on plain top-k retrieval (the calibration ignored), one round.
- ``conformal``: the conformal filter's context, one reasoner round.
- ``full``: conformal retrieval, the critic, up to ``max_rounds`` rounds, abstention.

A *right* answer (what every comparison counts, so verbosity cannot game it): a gold alias
(SQuAD-normalised) within the answer's first 12 words and, for a comparison, the other
compared entity not named there; EM, F1 and containment are reported beside it. For
unanswerable questions the right outcome is to abstain. Abstention precision = the share of a
mode's abstentions where naive RAG was not right (or the question has no answer).
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

from app.core.pipeline import Pipeline
from app.core.reasoner import TokenUsage, context_text
from app.core.types import InvalidQuery, LoopPolicy, QueryParams
from app.services import Services
from critic.train import auroc
from evaluation.scoring import contains, exact_match, f1, others_compared, right_answer
from llm import GeneratorError
from retrieval.jsonl import question_of, read_jsonl

Mode = Literal["naive", "single", "conformal", "full"]
MODES: tuple[Mode, ...] = ("naive", "single", "conformal", "full")
#: The reference mode: paired tests and cost ratios are against it.
BASELINE: Mode = "naive"

NAIVE_SYSTEM = "Answer the question using the context. Reply with a short answer only."
NAIVE_TOP_K = 3
NAIVE_MAX_TOKENS = 48


@dataclass(frozen=True, slots=True)
class QaResult:
    """One question answered in one mode."""

    qid: str
    type: str
    mode: Mode
    answer: str
    answerable: bool
    abstained: bool
    #: Strictly right (see the module docstring); False when abstained.
    right: bool
    em: bool
    f1: float
    contains: bool
    #: How sure the mode is of ``candidate``: the critic's best score (full), else the answer
    #: call's mean token log-probability. Sweeping a threshold on it gives the risk–coverage
    #: curve.
    confidence: float
    #: The answer the mode would give if it did not abstain, and whether that one is right.
    candidate: str
    candidate_right: bool
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


@dataclass(frozen=True, slots=True)
class _Answered:
    """What one mode said for one question, before scoring."""

    answer: str
    abstained: bool
    candidate: str
    confidence: float
    rounds: int
    llm_calls: int
    usage: TokenUsage
    critic_scores: list[float | None]
    timings_ms: dict[str, float]


async def naive_answer(services: Services, question: str, collection: str) -> _Answered:
    """The naive baseline: plain top-3, a plain prompt, the reply as it comes."""
    params = QueryParams(
        question=question, collection=collection, top_k=NAIVE_TOP_K, conformal=False
    )
    retrieval = await services.pipeline.retrieve(params)
    user = f"Context:\n{context_text(retrieval.hits)}\n\nQuestion: {question}"
    start = time.perf_counter()
    completion = await services.generator.complete(
        [{"role": "system", "content": NAIVE_SYSTEM}, {"role": "user", "content": user}],
        max_tokens=NAIVE_MAX_TOKENS,
        temperature=0.0,
        logprobs=True,
    )
    timings = dict(retrieval.timings_ms)
    timings["reason"] = round((time.perf_counter() - start) * 1000, 3)
    timings["total"] = round(timings.get("total", 0.0) + timings["reason"], 3)
    return _Answered(
        answer=completion.text,
        abstained=False,
        candidate=completion.text,
        confidence=completion.mean_logprob or 0.0,
        rounds=1,
        llm_calls=1,
        usage=TokenUsage(completion.prompt_tokens, completion.completion_tokens),
        critic_scores=[None],
        timings_ms=timings,
    )


async def _pipeline_answer(
    pipeline: Pipeline, mode: Mode, question: str, collection: str, top_k: int
) -> _Answered:
    params, policy = _setup(pipeline, mode, question, collection, top_k)
    outcome = await pipeline.run(params, policy)
    scores = [r.critic_score for r in outcome.rounds]
    known = [x for x in scores if x is not None]
    shown = outcome.candidate or outcome.rounds[-1]
    return _Answered(
        answer=outcome.answer,
        abstained=outcome.abstained,
        candidate=shown.reasoning.answer,
        confidence=max(known) if known else shown.reasoning.mean_logprob,
        rounds=len(outcome.rounds),
        llm_calls=outcome.llm_calls,
        usage=outcome.usage,
        critic_scores=scores,
        timings_ms=outcome.timings_ms,
    )


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
    services: Services,
    questions: Sequence[dict[str, Any]],
    modes: Sequence[Mode],
    *,
    collection: str,
    top_k: int = 5,
    concurrency: int = 2,
    progress: Callable[[int], object] | None = None,
) -> tuple[list[QaResult], list[Failure]]:
    """Every question in every mode (each question's modes back to back, for fair timing).

    A question the pipeline refuses (too long) or the generator fails (a timeout, a worker
    gone, a prompt over the model's context) fails that question, not an hour's run: it leaves
    every mode's results, so the modes are still compared on the same questions, and comes
    back as a ``Failure``.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(qa: dict[str, Any], mode: Mode) -> QaResult | Failure:
        try:
            async with gate:
                start = time.perf_counter()
                said = (
                    await naive_answer(services, qa["question"], collection)
                    if mode == "naive"
                    else await _pipeline_answer(
                        services.pipeline, mode, qa["question"], collection, top_k
                    )
                )
                wall = (time.perf_counter() - start) * 1000
        except (InvalidQuery, GeneratorError) as exc:
            return Failure(qa["id"], mode, f"{type(exc).__name__}: {exc}")
        finally:
            if progress is not None:
                progress(1)
        golds = [str(a) for a in qa.get("answers") or []]
        others = others_compared(qa) if qa.get("type") == "comparison" else []
        answered = bool(golds) and not said.abstained
        candidate_right = bool(golds) and right_answer(said.candidate, golds, others)
        return QaResult(
            qid=qa["id"],
            type=qa.get("type", ""),
            mode=mode,
            answer=said.answer,
            answerable=bool(golds),
            abstained=said.abstained,
            right=answered and candidate_right,
            em=answered and exact_match(said.answer, golds),
            f1=f1(said.answer, golds) if answered else 0.0,
            contains=answered and contains(said.answer, golds),
            confidence=said.confidence,
            candidate=said.candidate,
            candidate_right=candidate_right,
            rounds=said.rounds,
            llm_calls=said.llm_calls,
            prompt_tokens=said.usage.prompt,
            completion_tokens=said.usage.completion,
            wall_ms=round(wall, 1),
            critic_scores=said.critic_scores,
            timings_ms=said.timings_ms,
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
    right = {r.qid: r.right for r in results if r.mode == "conformal"}
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


def _wrong(r: QaResult) -> bool:
    """Answered, and not right (an answer to an unanswerable question is wrong)."""
    return not r.abstained and not r.right


def summarize(results: Sequence[QaResult]) -> dict[str, Any]:
    """Per mode and question type, plus the abstention figures that need the naive mode."""
    naive_right = {r.qid for r in results if r.mode == BASELINE and r.right}
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
                "right": sum(r.right for r in part),
                "wrong": sum(_wrong(r) for r in part),
                "abstained": sum(r.abstained for r in part),
                "em": statistics.mean(r.em for r in part),
                "f1": statistics.mean(r.f1 for r in part),
                "contains": statistics.mean(r.contains for r in part),
                "rounds": statistics.mean(r.rounds for r in part),
                "llm_calls": statistics.mean(r.llm_calls for r in part),
                "wall_p50_ms": _pct([r.wall_ms for r in part], 0.5),
                "wall_p95_ms": _pct([r.wall_ms for r in part], 0.95),
            }
        abstained = [r for r in rows if r.abstained]
        answered = [r for r in rows if not r.abstained]
        right_naive = [r for r in rows if r.qid in naive_right]
        out[mode] = {
            "by_type": by_type,
            "abstention_precision": statistics.mean(
                (not r.answerable) or r.qid not in naive_right for r in abstained
            )
            if abstained
            else None,
            "abstain_when_naive_right": statistics.mean(r.abstained for r in right_naive)
            if right_naive
            else None,
            "answered_accuracy": statistics.mean(r.right for r in answered) if answered else None,
            "risk_coverage": risk_coverage(rows),
        }
    return out


def risk_coverage(rows: Sequence[QaResult]) -> dict[str, Any]:
    """Selective answering, sweeping a threshold τ on ``confidence``: answer the questions at
    or above it with their candidate answer, abstain on the rest.

    ``coverage[k]`` is the share answered and ``accuracy[k]`` the share of those that are right
    when the k+1 most confident are answered (an answer to an unanswerable question is wrong);
    ``aurc`` is the mean risk (1 − accuracy) over the curve: lower is better, and a mode whose
    confidence ranked its answers perfectly would reach the least the right answers allow.
    """
    ordered = sorted(rows, key=lambda r: r.confidence, reverse=True)
    coverage: list[float] = []
    accuracy: list[float] = []
    right = 0
    for k, r in enumerate(ordered, 1):
        right += r.candidate_right
        coverage.append(round(k / len(ordered), 4))
        accuracy.append(round(right / k, 4))
    return {
        "coverage": coverage,
        "accuracy": accuracy,
        "aurc": round(1 - statistics.mean(accuracy), 4) if accuracy else None,
    }


def to_markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| mode | type | n | right | wrong | abstained | EM | F1 | contains | rounds | LLM calls "
        "| wall p50 / p95 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode, data in summary.items():
        for kind, m in data["by_type"].items():
            lines.append(
                f"| {mode} | {kind} | {m['n']} | {m['right']} | {m['wrong']} | {m['abstained']} "
                f"| {m['em']:.3f} | {m['f1']:.3f} | {m['contains']:.3f} | {m['rounds']:.2f} | "
                f"{m['llm_calls']:.2f} | {m['wall_p50_ms']:.0f} / {m['wall_p95_ms']:.0f} |"
            )
    lines += [
        "",
        "| mode | abstention precision | abstains when naive is right | answered accuracy "
        "| risk–coverage area (lower is better) |",
        "|---|---|---|---|---|",
    ]
    for mode, data in summary.items():
        cells = [
            "—" if data[k] is None else f"{data[k]:.3f}"
            for k in ("abstention_precision", "abstain_when_naive_right", "answered_accuracy")
        ]
        aurc = data["risk_coverage"]["aurc"]
        cells.append("—" if aurc is None else f"{aurc:.3f}")
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost(rows: Sequence[QaResult]) -> dict[str, Any]:
    """One mode's LLM calls, tokens and wall time, per question and per right answer."""
    correct = sum(r.right for r in rows)
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
        "wrong": sum(_wrong(r) for r in rows),
        "accuracy_answerable": round(correct / len(answerable), 4) if answerable else None,
        "abstain_unanswerable": round(statistics.mean(r.abstained for r in unanswerable), 4)
        if unanswerable
        else None,
        "totals": {k: round(v, 1) for k, v in totals.items()},
        "per_question": {k: round(v / len(rows), 2) for k, v in totals.items()},
        "per_correct": {k: round(v / correct, 2) if correct else None for k, v in totals.items()},
    }


def costs(results: Sequence[QaResult]) -> dict[str, Any]:
    """``cost`` of every mode in ``results``, and each mode's wall time against the baseline's
    (in total and per right answer); and ``paired``."""
    modes = {m: cost(rows) for m in MODES if (rows := [r for r in results if r.mode == m])}
    ratios: dict[str, float] = {}
    if BASELINE in modes:
        base = modes[BASELINE]
        for m in modes.keys() - {BASELINE}:
            c = modes[m]
            ratios[f"{m}_vs_{BASELINE}_wall"] = round(
                c["totals"]["wall_s"] / base["totals"]["wall_s"], 3
            )
            if c["per_correct"]["wall_s"] and base["per_correct"]["wall_s"]:
                ratios[f"{m}_vs_{BASELINE}_wall_per_correct"] = round(
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
    """Each mode against the naive baseline question by question, right answers and wrong
    answers apart: the ones only it got right (wrong), the ones only naive did, and the sign
    test's p. A few more in total can be noise; this says how likely."""
    rows = {(r.mode, r.qid): r for r in results}
    out: dict[str, Any] = {}
    for mode in (m for m in MODES if m != BASELINE):
        both = [q for m, q in rows if m == mode and (BASELINE, q) in rows]
        if not both:
            continue
        entry: dict[str, Any] = {"questions": len(both)}
        for name, hit in (("right", lambda r: r.right), ("wrong", _wrong)):
            wins = sum(hit(rows[mode, q]) and not hit(rows[BASELINE, q]) for q in both)
            losses = sum(hit(rows[BASELINE, q]) and not hit(rows[mode, q]) for q in both)
            entry[name] = {
                "only_this": wins,
                f"only_{BASELINE}": losses,
                "sign_test_p": float(f"{sign_test(wins, losses):.3g}"),
            }
        out[f"{mode}_vs_{BASELINE}"] = entry
    return out


def costs_markdown(report: dict[str, Any]) -> str:
    """``costs`` as a table, one row a mode, and the ratios and paired tests under it."""
    keys = ("llm_calls", "prompt_tokens", "completion_tokens", "wall_s")
    lines = [
        "| mode | questions | right | wrong | accuracy (answerable) | abstain (unanswerable) "
        "| LLM calls / q | prompt tok / q | completion tok / q | wall s / q "
        "| LLM calls / right | prompt tok / right | completion tok / right "
        "| wall s / right |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, c in report["modes"].items():
        q, k = c["per_question"], c["per_correct"]
        lines.append(
            f"| {mode} | {c['questions']} | {c['correct']} | {c['wrong']} "
            f"| {c['accuracy_answerable']} | {c['abstain_unanswerable']} | "
            + " | ".join(str(q[x]) for x in keys)
            + " | "
            + " | ".join("—" if k[x] is None else str(k[x]) for x in keys)
            + " |"
        )
    if report["ratios"]:
        ratios = ", ".join(f"{k} {v}" for k, v in report["ratios"].items())
        lines += ["", f"Ratios (same run): {ratios}"]
    for name, p in report["paired"].items():
        for what in ("right", "wrong"):
            t = p[what]
            lines += [
                "",
                f"Paired, {name}, {what} answers ({p['questions']} questions): only here "
                f"{t['only_this']}, only in {BASELINE} {t[f'only_{BASELINE}']}, two-sided sign "
                f"test p {t['sign_test_p']}",
            ]
    return "\n".join(lines)


def results_json(results: Sequence[QaResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
