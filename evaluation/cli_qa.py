"""``covrag selfpractice`` and ``covrag eval qa``: the SIM-RAG data and evaluation commands
(registered by ``evaluation.cli``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from tqdm import tqdm

from app.config import Settings, get_settings
from app.services import Services, build_services
from evaluation.outputs import default_out
from evaluation.qa import MODES, Mode, SearchSetup, load_questions, results_json, run_modes
from evaluation.qa_report import costs, costs_markdown, critic_auroc, summarize, to_markdown
from evaluation.selfpractice import practice
from retrieval.hybrid import SearchMode


def _load(paths: list[Path], per_type: int | None) -> list[dict[str, Any]]:
    rows, errors = load_questions(paths, per_type)
    for error in errors:
        typer.echo(f"skipped malformed line {error}", err=True)
    return rows


T = TypeVar("T")
#: Work on the services, told of each step done (a progress bar's ``update``).
Work = Callable[[Services, Callable[[int], object]], Awaitable[T]]


def _run(settings: Settings, work: Work[T], *, total: int, unit: str, desc: str) -> T:
    """``work`` on freshly built services under a progress bar of ``total`` steps; the services
    are closed after, whatever happens."""

    async def go() -> T:
        services = build_services(settings)
        try:
            with tqdm(total=total, unit=unit, desc=desc) as bar:
                return await work(services, bar.update)
        finally:
            await services.aclose()

    return asyncio.run(go())


def selfpractice(
    qa: Annotated[list[Path], typer.Option(help="QA JSONL file(s); repeat the option.")],
    out: Annotated[Path, typer.Option(help="Rows are appended here (resumable).")],
    rounds: Annotated[int, typer.Option(min=1, max=5, help="Rounds per question.")] = 2,
    collection: Annotated[str | None, typer.Option()] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=16, help="Questions in flight.")] = 2,
) -> None:
    """Run the loop with the critic off over training questions; label every round."""
    settings = get_settings()
    questions = _load(qa, None)

    report = _run(
        settings.updated(critic={"kind": "off"}),
        lambda services, progress: practice(
            services.pipeline,
            questions,
            out,
            collection=collection or settings.collections.default,
            rounds=rounds,
            concurrency=concurrency,
            progress=progress,
        ),
        total=len(questions),
        unit="q",
        desc="self-practice",
    )
    typer.echo(json.dumps(asdict(report)))


def qa(
    qa: Annotated[list[Path], typer.Option(help="QA JSONL file(s), answerable or unanswerable.")],
    modes: Annotated[
        str, typer.Option(help="Comma-separated: naive,single,conformal,full.")
    ] = "naive,single,conformal,full",
    collection: Annotated[str | None, typer.Option()] = None,
    top_k: Annotated[int, typer.Option(min=1, max=100, help="k of the single mode.")] = 5,
    search: Annotated[
        SearchMode,
        typer.Option(help="covrag's modes search dense or hybrid; naive stays dense top-3."),
    ] = "dense",
    rerank: Annotated[
        bool, typer.Option(help="covrag's modes rerank (COVRAG_RERANKER_DIR, calibrated with it).")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=16)] = 2,
    per_type: Annotated[
        int | None,
        typer.Option(help="At most this many questions of each type per file (file order)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: <data dir>/eval/qa).")
    ] = None,
) -> None:
    """Answer every question in each mode, side by side with naive RAG: right and wrong
    answers, abstentions, EM, F1, risk–coverage, and LLM calls, tokens and wall time per
    question and per right answer, with paired sign tests against naive."""
    chosen: list[Mode] = []
    for m in (t.strip() for t in modes.split(",") if t.strip()):
        if m not in MODES:
            raise typer.BadParameter(f"unknown mode {m!r}; use {', '.join(MODES)}")
        chosen.append(m)
    settings = get_settings()
    out = out or default_out(settings, "qa")
    questions = _load(qa, per_type)

    results, failures = _run(
        settings,
        lambda services, progress: run_modes(
            services,
            questions,
            chosen,
            collection=collection or settings.collections.default,
            top_k=top_k,
            how=SearchSetup(search=search, rerank=rerank),
            concurrency=concurrency,
            progress=progress,
        ),
        total=len(questions) * len(chosen),
        unit="run",
        desc="eval qa",
    )
    for failure in failures:
        typer.echo(f"left out {failure.qid} ({failure.mode}): {failure.error}", err=True)
    if not results:
        typer.echo(f"every question was left out ({len(failures)} failed runs)", err=True)
        raise typer.Exit(1)
    summary = summarize(results)
    held_out = critic_auroc(results)
    spent = costs(results)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "qa": [str(p) for p in qa],
        "modes": chosen,
        "per_type": per_type,
        "top_k": top_k,
        "search": search,
        "rerank": rerank,
        "concurrency": concurrency,
        "questions": len(questions),
        "left_out": sorted({f.qid for f in failures}),
        "critic": settings.critic.kind,
        "max_rounds": settings.critic.max_rounds,
        "generator": settings.generator.model,
    }
    (out / "qa.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "summary": summary,
                "critic_auroc": held_out,
                "cost": spent,
                "results": results_json(results),
                "failures": [asdict(f) for f in failures],
            },
            indent=1,
        )
    )
    table = to_markdown(summary)
    if held_out is not None:
        table += (
            f"\n\nCritic AUROC (round 0, right vs wrong answer): {held_out['auroc']:.3f} "
            f"over {held_out['n']} questions ({held_out['right']} right)"
        )
    table += "\n\nCost (sums over each mode's questions):\n\n" + costs_markdown(spent)
    (out / "qa.md").write_text(f"# QA evaluation\n\n```\n{json.dumps(meta)}\n```\n\n{table}\n")
    _plot(summary, out / "qa.png")
    typer.echo(table)
    typer.echo(f"wrote {out / 'qa.json'}, {out / 'qa.md'}, {out / 'qa.png'}", err=True)


def _right_share(by_type: dict[str, Any], kind: str) -> float:
    """Right answers per question of ``kind``; for unanswerable ones, abstentions."""
    if kind not in by_type:
        return 0.0
    m = by_type[kind]
    return float(m["abstained" if kind == "unanswerable" else "right"]) / m["n"]


def _plot(summary: dict[str, Any], path: Path) -> None:
    """Right answers per question type, and each mode's risk–coverage curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({k for data in summary.values() for k in data["by_type"]})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(len(summary), 1)
    for i, (mode, data) in enumerate(summary.items()):
        share = [_right_share(data["by_type"], k) for k in kinds]
        axes[0].bar([j + i * width for j in range(len(kinds))], share, width, label=mode)
        curve = data["risk_coverage"]
        axes[1].plot(
            curve["coverage"], curve["accuracy"], label=f"{mode} (area {curve['aurc']:.3f})"
        )
    axes[0].set_xticks([j + width * (len(summary) - 1) / 2 for j in range(len(kinds))], kinds)
    axes[0].set_title("right answers (share; for unanswerable: abstentions)")
    axes[0].set_ylim(0, 1)
    axes[1].set_xlabel("share of questions answered (sweeping τ)")
    axes[1].set_ylabel("accuracy of the answered")
    axes[1].set_title("risk–coverage")
    axes[1].set_xlim(0, 1)
    axes[1].set_ylim(0, 1)
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
