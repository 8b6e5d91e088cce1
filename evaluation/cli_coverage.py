"""``covrag eval coverage`` (registered by ``evaluation.cli``).

It scores a QA file against a collection once, then re-splits it many times to check the
conformal guarantee empirically (``evaluation.coverage``, ``evaluation.mondrian``), and writes
``coverage.json``, ``coverage.md`` (``evaluation.coverage_report``) and plots
(``evaluation.coverage_plots``; default folder: ``<data dir>/eval/coverage``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from app.config import get_settings
from app.services import build_embedder, build_store
from evaluation.coverage import (
    evaluate_coverage,
    resolve_cal_size,
)
from evaluation.coverage_plots import plot_mondrian, plot_subset
from evaluation.coverage_report import (
    MIN_TEST,
    SubsetResult,
    Unanswerable,
    abstain_rows,
    jsonable,
    mondrian_section,
    subset_markdown,
)
from evaluation.mondrian import evaluate_mondrian
from evaluation.outputs import default_out
from retrieval.calibration_set import load_qa, on_relative_scale, score_vectors
from retrieval.conformal import RelativeScale
from retrieval.errors import RetrievalError
from retrieval.jsonl import question_of, read_jsonl
from retrieval.kinds import KindClassifier
from retrieval.links import link_rank


def _floats(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"not a comma-separated list of numbers: {text!r}") from exc
    if not values or not all(0 < a < 1 for a in values):
        raise typer.BadParameter(f"alphas must lie in (0, 1): {text!r}")
    return sorted(set(values))


def _load_unanswerable(path: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """``(id, question, kind)`` per usable line, and the malformed lines with their numbers."""
    return read_jsonl(
        path,
        lambda row, lineno: (
            str(row.get("id", f"line-{lineno}")),
            question_of(row),
            str(row.get("kind", "")),
        ),
    )


def _echo_err(message: str) -> None:
    typer.echo(message, err=True)


def _cal_sizes(spec: str, n_items: int) -> tuple[list[int], list[str]]:
    sizes: set[int] = set()
    skipped: list[str] = []
    for token in (t for t in spec.split(",") if t.strip()):
        try:
            n_cal = resolve_cal_size(token, n_items)
        except ValueError as exc:
            raise typer.BadParameter(f"bad calibration size {token!r}") from exc
        if 1 <= n_cal <= n_items - MIN_TEST:
            sizes.add(n_cal)
        else:
            skipped.append(f"{token.strip()} (= {n_cal}; needs 1 ≤ n_cal ≤ {n_items - MIN_TEST})")
    return sorted(sizes), skipped


def coverage(
    qa: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="QA JSONL with gold titles/answers.")
    ],
    alphas: Annotated[str, typer.Option(help="Comma-separated error rates.")] = "0.05,0.1,0.2",
    splits: Annotated[int, typer.Option(min=1, help="Random calibration/test splits.")] = 100,
    collection: Annotated[str | None, typer.Option(help="Default: the settings' one.")] = None,
    cal_sizes: Annotated[
        str,
        typer.Option(
            help="Comma-separated calibration sizes: N, 'half', or 'all-but-M' (N−M), "
            f"resolved per subset; sizes leaving < {MIN_TEST} test questions are skipped."
        ),
    ] = "19,50,100,half,all-but-50",
    kinds: Annotated[
        str,
        typer.Option(
            help="Subsets besides the pooled set: 'all' (every question type), 'none', "
            "or comma-separated types."
        ),
    ] = "all",
    seed: Annotated[int, typer.Option(help="Seed of the splits.")] = 0,
    max_chunks: Annotated[
        int, typer.Option(min=1, help="Context budget in chunks (≤ search-k).")
    ] = 100,
    search_k: Annotated[int, typer.Option(min=1, help="Top hits scored per question.")] = 100,
    unanswerable: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Unanswerable questions (abstain signal)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: <data dir>/eval/coverage).")
    ] = None,
    score: Annotated[
        str | None,
        typer.Option(
            help="The scale thresholds are on: 'cosine' or 'relative' (a chunk's share of the "
            "top 10 hits); default: COVRAG_CONFORMAL_SCORE."
        ),
    ] = None,
) -> None:
    """Check the conformal coverage guarantee on repeated calibration/test splits of a QA set."""
    alpha_list = _floats(alphas)
    settings = get_settings()
    relative = RelativeScale()
    scale = score or settings.calibration.score
    if scale not in ("cosine", "relative"):
        raise typer.BadParameter(f"--score must be 'cosine' or 'relative', got {scale!r}")
    if max_chunks > search_k:
        raise typer.BadParameter("--max-chunks cannot exceed --search-k (unseen hits)")
    name = collection or settings.collections.default
    out = out or default_out(settings, "coverage")

    qa_file = load_qa(qa)
    for error in qa_file.errors:
        _echo_err(f"skipped malformed line {error}")
    if not qa_file.items:
        _echo_err(f"error: no usable questions in {qa}")
        raise typer.Exit(2)
    unanswerable_rows: list[tuple[str, str, str]] = []
    unanswerable_errors: list[str] = []
    if unanswerable is not None:
        unanswerable_rows, unanswerable_errors = _load_unanswerable(unanswerable)
        for error in unanswerable_errors:
            _echo_err(f"skipped malformed line {error}")

    started = time.perf_counter()
    store = build_store(settings.store)
    embedder = None
    try:
        indexed = store.get_collection(name).indexed > 0  # score as the queries search
        embedder = build_embedder(settings.embedder)
        _echo_err(f"scoring {len(qa_file.items)} questions against {name!r} …")
        vectors = embedder.embed([it.question for it in qa_file.items]).tolist()
        scores = score_vectors(
            store, name, qa_file.items, vectors, search_k=search_k, approximate=indexed
        )
        # COVRAG_MULTI_HOP_LINKS off: no question gets linked documents, as a query would not
        links = (
            [
                link_rank(store, name, vector, item.gold_doc_ids)
                for item, vector in zip(qa_file.items, vectors, strict=True)
            ]
            if settings.calibration.multi_hop_links
            else [math.inf] * len(qa_file.items)
        )
        negatives: list[Unanswerable] = []
        if unanswerable_rows:
            vectors = embedder.embed([q for _, q, _ in unanswerable_rows])
            for (uid, _, kind), vector in zip(unanswerable_rows, vectors, strict=True):
                hits = store.search(name, vector.tolist(), limit=relative.candidates)
                negatives.append(Unanswerable(uid, kind, [h.score for h in hits]))
        embedder_model = embedder.spec.model
    except RetrievalError as exc:
        _echo_err(f"error: {exc}")
        raise typer.Exit(2) from exc
    finally:
        if embedder is not None:
            embedder.close()
        store.close()
    scored_s = time.perf_counter() - started
    relative_on = scale == "relative"
    on_cosine = scores
    if relative_on:  # the same searches, on a chunk's share of its top hits
        scores = [on_relative_scale(s, relative) for s in scores]
        negatives = [Unanswerable(u.id, u.kind, relative.shares(u.similarities)) for u in negatives]
    _echo_err(f"scored in {scored_s:.1f} s; evaluating {splits} splits …")

    all_kinds = Counter(s.kind or "untyped" for s in scores)
    if kinds.strip().lower() == "all":
        wanted = [k for k, _ in all_kinds.most_common()] if len(all_kinds) > 1 else []
    elif kinds.strip().lower() == "none":
        wanted = []
    else:
        wanted = [k.strip() for k in kinds.split(",") if k.strip()]
    subsets = {"pooled": scores}
    for kind in wanted:
        subsets[kind] = [s for s in scores if (s.kind or "untyped") == kind]

    results: list[SubsetResult] = []
    for subset_name, subset_scores in subsets.items():
        sizes, skipped = _cal_sizes(cal_sizes, len(subset_scores))
        for s in skipped:
            _echo_err(f"{subset_name}: skipped calibration size {s}")
        reports = [
            evaluate_coverage(
                subset_scores,
                alpha_list,
                splits=splits,
                n_cal=n_cal,
                seed=seed,
                max_chunks=max_chunks,
            )
            for n_cal in sizes
        ]
        results.append(
            SubsetResult(
                name=subset_name,
                n_items=len(subset_scores),
                kinds=dict(Counter(s.kind or "untyped" for s in subset_scores)),
                reports=reports,
                abstain=abstain_rows(subset_scores, negatives, alpha_list),
                skipped_cal_sizes=skipped,
            )
        )

    classifier = KindClassifier.load()
    groups = [classifier.groups(item.question, item.group) for item in qa_file.items]
    mondrian = evaluate_mondrian(
        on_cosine,
        groups,
        alpha_list,
        links=links,
        splits=splits,
        seed=seed,
        max_chunks=max_chunks,
        relative=scores if relative_on else None,
    )
    predicted = dict(Counter(g for gs in groups for g in gs))

    argv = sys.argv[1:]
    args = argv[argv.index("coverage") + 1 :] if "coverage" in argv else argv
    command = "covrag eval coverage " + " ".join(args)
    header = [
        f"# Conformal retrieval coverage — collection `{name}`",
        "",
        f"- QA: `{qa}` ({len(qa_file.items)} questions, {len(qa_file.errors)} malformed lines"
        f"{'' if unanswerable is None else f'; unanswerable: `{unanswerable}`, '}"
        f"{'' if unanswerable is None else f'{len(negatives)} questions'})",
        f"- embedder: {settings.embedder.kind} {embedder_model}; store: {settings.store.kind}; "
        f"search_k {search_k}; budget {max_chunks} chunks; scale: {scale}"
        + (" (similarities below: a chunk's share of its top 10 hits)" if relative_on else ""),
        f"- {splits} seeded splits (seed {seed}) per calibration size; the same splits serve every "
        "α and both rules",
        "- coverage: the held-out question's best gold chunk has similarity ≥ 1−q̂ "
        "(a bridge question's second hop only; both documents of a comparison); conformal = "
        "⌈(n+1)(1−α)⌉-th smallest score, naive = CONFLARE's linear percentile (misses dropped)",
        "- chunks: hits with similarity ≥ 1−q̂ per test question, pooled over splits, capped at "
        "the budget; fixed top-k = smallest k whose mean test coverage reaches the conformal "
        "mean; budget full = share of test questions with ≥ budget chunks clearing",
        f"- generated {datetime.now(UTC).isoformat(timespec='seconds')}: `{command}`",
    ]
    sections = ["\n".join(header)]
    sections += [subset_markdown(subset) for subset in results]
    sections.append(
        mondrian_section(
            mondrian,
            predicted,
            splits=splits,
            seed=seed,
            max_chunks=max_chunks,
            links=settings.calibration.multi_hop_links,
            relative=relative_on,
        )
    )
    markdown = "\n\n".join(sections) + "\n"

    out.mkdir(parents=True, exist_ok=True)
    plots = [p for subset in results for p in plot_subset(subset, out)]
    plots += plot_mondrian(mondrian, out)
    payload = {
        "command": command,
        "collection": name,
        "qa": str(qa),
        "unanswerable": None if unanswerable is None else str(unanswerable),
        "embedder": {"backend": settings.embedder.kind, "model": embedder_model},
        "alphas": alpha_list,
        "splits": splits,
        "seed": seed,
        "max_chunks": max_chunks,
        "search_k": search_k,
        "score": scale,
        "malformed": qa_file.errors + unanswerable_errors,
        "scoring_seconds": round(scored_s, 2),
        "subsets": [asdict(s) for s in results],
        "mondrian": [asdict(r) for r in mondrian],
        "items": [
            {
                "id": s.id,
                "kind": s.kind,
                "score": s.score,
                "rank": s.rank,
                "top_similarity": s.similarities[0] if s.similarities else None,
            }
            for s in scores
        ],
        "unanswerable_items": [
            {"id": u.id, "kind": u.kind, "top_similarity": max(u.similarities, default=None)}
            for u in negatives
        ],
    }
    (out / "coverage.json").write_text(
        json.dumps(jsonable(payload), indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    (out / "coverage.md").write_text(markdown, encoding="utf-8")
    typer.echo(markdown)
    _echo_err(f"wrote {out / 'coverage.json'}, {out / 'coverage.md'}, {len(plots)} plots")
