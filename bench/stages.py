"""Where a query's time goes, and what a correct answer costs, in each mode side by side.

    .venv/bin/python -m bench.stages [--per-type 10] [--out bench/results/stages]

Runs covrag's own pipeline — built by ``build_services`` from the ``COVRAG_*`` settings, as
``covrag serve`` builds it, against the running vLLM worker — over the held-out QA split
(``data/qa/test.jsonl`` and ``unanswerable_test.jsonl``), in every mode of ``covrag eval qa``:

- ``naive``: the baseline a user would pick instead: plain top-3, a plain prompt, one LLM call;
- ``single``: covrag's reasoner on plain top-5 (the calibration ignored), one LLM call;
- ``conformal``: the conformal filter's context, one LLM call;
- ``full``: conformal retrieval, the critic, up to ``max_rounds`` rounds, abstention.

One question at a time (a question's modes back to back), so each stage time is that
stage's alone and the three modes see the same machine load. Stage times are the pipeline's
own, the numbers ``/v1/query`` returns in ``timings_ms``; the non-LLM overhead of a query is
its total minus its LLM calls (``reason`` + ``rewrite``). The HTTP layer is not in these
figures: ``bench/serve.py`` measures it (a cached answer, 1 connection).

A correct answer: a right one, as ``covrag eval qa`` scores it (a gold alias within the
answer's first 12 words). Writes ``stages.json``, ``stages.md``,
``stages.png`` and ``cost.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.config import get_settings
from app.services import build_services
from bench.stats import percentiles
from evaluation.qa import MODES, Failure, QaResult, load_questions, results_json, run_modes
from evaluation.qa_report import costs, costs_markdown

REPO = Path(__file__).resolve().parents[1]

#: The pipeline's stage timings reported per mode; ``non_llm`` and ``other`` are derived.
STAGES = ("embed", "search", "filter", "critic", "other", "non_llm", "reason", "rewrite", "total")
LLM = ("reason", "rewrite")
NON_LLM_PARTS = ("embed", "search", "filter", "critic")


def stage_times(r: QaResult) -> dict[str, float]:
    """One query's stages; ``other`` is the pipeline's own glue (thread hops, context)."""
    t = {k: r.timings_ms.get(k, 0.0) for k in ("embed", "search", "filter", "critic", *LLM)}
    t["total"] = r.timings_ms["total"]
    t["non_llm"] = t["total"] - sum(t[k] for k in LLM)
    t["other"] = t["non_llm"] - sum(t[k] for k in NON_LLM_PARTS)
    return t


def report(results: list[QaResult]) -> dict[str, Any]:
    spent = costs(results)
    modes: dict[str, Any] = {}
    for mode, cost in spent["modes"].items():
        times = [stage_times(r) for r in results if r.mode == mode]
        modes[mode] = {
            "stages_ms": {s: percentiles([t[s] for t in times]) for s in STAGES},
            "cost": cost,
        }
    return {**spent, "modes": modes}


def markdown(rep: dict[str, Any]) -> str:
    lines = [
        "| mode | stage | p50 ms | p95 ms | p99 ms |",
        "|---|---|---:|---:|---:|",
    ]
    for mode, data in rep["modes"].items():
        for stage in STAGES:
            p = data["stages_ms"][stage]
            name = f"**{stage}**" if stage in ("non_llm", "total") else stage
            lines.append(f"| {mode} | {name} | {p['p50']} | {p['p95']} | {p['p99']} |")
    spent = {**rep, "modes": {m: d["cost"] for m, d in rep["modes"].items()}}
    return "\n".join(lines) + "\n\n" + costs_markdown(spent) + "\n"


def plot(rep: dict[str, Any], out: Path, target_p50: float, target_p99: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(rep["modes"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    parts = (*NON_LLM_PARTS, "other")
    for ax, pct in zip(axes, ("p50", "p99"), strict=True):
        left = np.zeros(len(modes))
        for i, stage in enumerate(parts):
            widths = [rep["modes"][m]["stages_ms"][stage][pct] for m in modes]
            ax.barh(modes, widths, left=left, color=f"C{i}", label=stage)
            left += widths
        ax.scatter(
            [rep["modes"][m]["stages_ms"]["non_llm"][pct] for m in modes],
            modes,
            marker="|",
            s=300,
            color="black",
            label=f"non-LLM total {pct}",
        )
        target = target_p50 if pct == "p50" else target_p99
        ax.axvline(target, color="grey", ls=":", label=f"{target:g} ms target")
        ax.set(xlabel="ms", title=f"non-LLM time per query, {pct} of each stage")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "stages.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    what = (
        ("wall_s", "wall s / correct answer"),
        ("llm_calls", "LLM calls / correct answer"),
        ("prompt_tokens", "prompt tokens / correct answer"),
        ("completion_tokens", "completion tokens / correct answer"),
    )
    for ax, (key, title) in zip(axes, what, strict=True):
        values = [rep["modes"][m]["cost"]["per_correct"][key] or 0 for m in modes]
        ax.bar(modes, values, color=[f"C{i}" for i in range(len(modes))])
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "cost.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    qa = REPO / ".covrag" / "qa"
    ap.add_argument(
        "--qa", type=Path, nargs="+", default=[qa / "test.jsonl", qa / "unanswerable_test.jsonl"]
    )
    ap.add_argument("--per-type", type=int, default=10, help="questions per type per file")
    ap.add_argument("--top-k", type=int, default=5, help="k of the plain (single) mode")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "stages")
    ap.add_argument(
        "--query-cache",
        action="store_true",
        help="keep the query-embedding cache (then a question's later modes reuse its vector)",
    )
    ap.add_argument("--target-p50-ms", type=float, default=15.0)
    ap.add_argument("--target-p99-ms", type=float, default=40.0)
    args = ap.parse_args()
    settings = get_settings()
    questions, errors = load_questions(args.qa, args.per_type)
    if errors:
        sys.exit(f"malformed QA lines: {errors}")
    load_start = os.getloadavg()

    async def go() -> tuple[list[QaResult], list[Failure]]:
        services = build_services(settings)
        if not args.query_cache:  # every mode pays for its embedding, as a new question does
            services.pipeline.query_cache = None
        try:
            return await run_modes(
                services,
                questions,
                MODES,
                collection=settings.collections.default,
                top_k=args.top_k,
                concurrency=1,
                progress=lambda _: print(".", end="", file=sys.stderr, flush=True),
            )
        finally:
            await services.aclose()

    results, failures = asyncio.run(go())
    print(file=sys.stderr)
    if failures:
        sys.exit(f"questions refused or failed on the generator, not a clean run: {failures}")
    rep = report(results)
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.stages " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_avg": {"start": load_start, "end": os.getloadavg()},
        "qa": [str(p.relative_to(REPO) if p.is_relative_to(REPO) else p) for p in args.qa],
        "questions": len(questions),
        "collection": settings.collections.default,
        "generator": settings.generator.model,
        "embedder": settings.embedder.kind,
        "critic": settings.critic.kind,
        "max_rounds": settings.critic.max_rounds,
        "query_cache": args.query_cache,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stages.json").write_text(
        json.dumps({"meta": meta, **rep, "results": results_json(results)}, indent=1) + "\n"
    )
    table = markdown(rep)
    (args.out / "stages.md").write_text(f"```\n{json.dumps(meta)}\n```\n\n{table}")
    plot(rep, args.out, args.target_p50_ms, args.target_p99_ms)
    print(table)


if __name__ == "__main__":
    main()
