"""``covrag eval coverage`` (registered by ``evaluation.cli``).

It scores a QA file against a collection once, then re-splits it many times to check the
conformal guarantee empirically (``evaluation.coverage``), and writes ``coverage.json``,
``coverage.md`` and plots (default folder: ``<data dir>/eval/coverage``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from app.config import get_settings
from app.services import build_embedder, build_store
from evaluation.coverage import (
    CoverageReport,
    abstain_signal,
    evaluate_coverage,
    evaluate_mondrian,
    mondrian_markdown,
    resolve_cal_size,
    to_markdown,
)
from evaluation.outputs import default_out
from retrieval.calibration import ItemScore, load_qa, score_items
from retrieval.conformal import conformal_quantile
from retrieval.errors import RetrievalError
from retrieval.jsonl import question_of, read_jsonl
from retrieval.kinds import KindClassifier

#: A calibration size must leave at least this many test questions per split.
MIN_TEST = 20
#: Mean coverage may fall this far below 1−α before a check is flagged (split noise).
COVERAGE_SLACK = 0.01


@dataclass(frozen=True, slots=True)
class Unanswerable:
    """An unanswerable question's top similarities (it has no gold chunk to score)."""

    id: str
    kind: str
    similarities: list[float]


@dataclass(frozen=True, slots=True)
class SubsetResult:
    """Everything measured on one subset of the QA file (pooled, or one question type)."""

    name: str
    n_items: int
    kinds: dict[str, int]
    reports: list[CoverageReport]
    abstain: list[dict[str, Any]]
    skipped_cal_sizes: list[str]


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


def _jsonable(value: Any) -> Any:
    """Strict JSON: ±∞ as ``"inf"``/``"-inf"``, NaN as ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


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


def _abstain_rows(
    scores: list[ItemScore], unanswerable: list[Unanswerable], alphas: list[float]
) -> list[dict[str, Any]]:
    """Abstain signal at q̂ from *all* of the subset's questions, per α and unanswerable kind."""
    if not unanswerable:
        return []
    calibration = sorted(s.score for s in scores)
    kinds = sorted({u.kind for u in unanswerable if u.kind})
    rows = []
    for alpha in alphas:
        qhat = conformal_quantile(calibration, alpha)
        overall = abstain_signal(scores, [u.similarities for u in unanswerable], qhat)
        by_kind = {
            k: abstain_signal(
                scores, [u.similarities for u in unanswerable if u.kind == k], qhat
            ).unanswerable_empty
            for k in kinds
        }
        rows.append({"alpha": alpha, **asdict(overall), "unanswerable_empty_by_kind": by_kind})
    return rows


def _abstain_markdown(rows: list[dict[str, Any]]) -> str:
    kinds = sorted({k for r in rows for k in r["unanswerable_empty_by_kind"]})
    head = "| α | q̂ | threshold 1−q̂ | answerable empty | unanswerable empty |"
    head += "".join(f" {k} empty |" for k in kinds)
    lines = [head, "|---" * (5 + len(kinds)) + "|"]
    for r in rows:
        thr = "none (q̂ = ∞)" if r["threshold"] is None else f"{r['threshold']:.4f}"
        cells = [
            f"{r['alpha']:g}",
            f"{r['qhat']:.4f}",
            thr,
            f"{r['answerable_empty']:.3f} (n={r['n_answerable']})",
            f"{r['unanswerable_empty']:.3f} (n={r['n_unanswerable']})",
            *(f"{r['unanswerable_empty_by_kind'][k]:.3f}" for k in kinds),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _checks(subset: SubsetResult) -> list[str]:
    """Plain-language verdicts on the two claims: the target holds, and it is cheaper than top-k.

    Over random splits of *any* fixed set of questions the expected coverage is ≥ 1−α, so a
    shortfall beyond Monte-Carlo error (z = shortfall / se) points at a bug, not at the data.
    """
    if not subset.reports:
        return [f"- no calibration size leaves {MIN_TEST} test questions of {subset.n_items}"]
    held, missed, cheaper, dearer = 0, [], 0, []
    for report in subset.reports:
        for r in report.results:
            c = r.conformal
            if c is None:
                continue
            if c.coverage_mean >= r.target - COVERAGE_SLACK:
                held += 1
            else:
                z = (r.target - c.coverage_mean) / c.coverage_se if c.coverage_se else math.inf
                missed.append(
                    f"n_cal={report.n_cal} α={r.alpha:g}: {c.coverage_mean:.3f} (z = {z:.1f})"
                )
            if r.fixed_k is not None and c.chunks.mean <= r.fixed_k:
                cheaper += 1
            else:
                dearer.append(
                    f"n_cal={report.n_cal} α={r.alpha:g}: {c.chunks.mean:.1f} vs top-{r.fixed_k}"
                )
    return [
        f"- conformal mean coverage ≥ 1−α−{COVERAGE_SLACK}: {held} of {held + len(missed)}"
        + (f"; short: {'; '.join(missed)}" if missed else ""),
        f"- conformal mean chunks ≤ fixed top-k at the same coverage: {cheaper} of "
        f"{cheaper + len(dearer)}" + (f"; not: {'; '.join(dearer)}" if dearer else ""),
    ]


def _plot(subset: SubsetResult, out: Path) -> list[Path]:
    """(a) coverage vs 1−α with the diagonal; (b) mean chunks passed vs α, conformal vs top-k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not subset.reports:
        return []
    colors = plt.get_cmap("viridis")(
        [i / max(len(subset.reports) - 1, 1) * 0.85 for i in range(len(subset.reports))]
    )
    alphas = [r.alpha for r in subset.reports[0].results]
    targets = [1 - a for a in alphas]
    nan = float("nan")

    fig, ax = plt.subplots(figsize=(7, 5.5))
    lo, hi = min(targets) - 0.03, 1.0
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, label="target 1−α")
    jitter = 0.0025
    for i, (report, color) in enumerate(zip(subset.reports, colors, strict=True)):
        dx = (i - (len(subset.reports) - 1) / 2) * jitter
        conf = [r.conformal for r in report.results]
        naive = [r.naive for r in report.results]
        ax.errorbar(
            [t + dx for t in targets],
            [c.coverage_mean if c else nan for c in conf],
            yerr=[c.coverage_sd if c else nan for c in conf],
            color=color,
            marker="o",
            capsize=3,
            label=f"conformal n_cal={report.n_cal}",
        )
        ax.errorbar(
            [t + dx + jitter / 3 for t in targets],
            [c.coverage_mean for c in naive],
            yerr=[c.coverage_sd for c in naive],
            color=color,
            marker="x",
            ls="--",
            capsize=3,
            alpha=0.7,
            label=f"naive n_cal={report.n_cal}",
        )
    ax.set(
        xlabel="target coverage 1−α",
        ylabel="empirical test coverage (mean ± sd over splits)",
        title=f"Conformal vs naive threshold — {subset.name} ({subset.n_items} questions)",
        xlim=(lo, hi),
    )
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    coverage_png = out / f"coverage_{subset.name}.png"
    fig.savefig(coverage_png, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5.5))
    for report, color in zip(subset.reports, colors, strict=True):
        ax.plot(
            alphas,
            [r.conformal.chunks.mean if r.conformal else nan for r in report.results],
            color=color,
            marker="o",
            label=f"conformal n_cal={report.n_cal}",
        )
        ax.plot(
            alphas,
            [r.fixed_k if r.fixed_k is not None else nan for r in report.results],
            color=color,
            marker="s",
            ls=":",
            label=f"fixed top-k, same coverage, n_cal={report.n_cal}",
        )
    ax.set(
        xlabel="α",
        ylabel="mean chunks passed to the generator",
        title=f"Price of coverage — {subset.name}",
        ylim=(0, None),
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    chunks_png = out / f"chunks_{subset.name}.png"
    fig.savefig(chunks_png, dpi=120)
    plt.close(fig)
    return [coverage_png, chunks_png]


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
) -> None:
    """Check the conformal coverage guarantee on repeated calibration/test splits of a QA set."""
    alpha_list = _floats(alphas)
    if max_chunks > search_k:
        raise typer.BadParameter("--max-chunks cannot exceed --search-k (unseen hits)")
    settings = get_settings()
    name = collection or settings.default_collection
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
    store = build_store(settings)
    embedder = None
    try:
        indexed = store.get_collection(name).indexed > 0  # score as the queries search
        embedder = build_embedder(settings)
        _echo_err(f"scoring {len(qa_file.items)} questions against {name!r} …")
        scores = score_items(
            store, embedder, name, qa_file.items, search_k=search_k, approximate=indexed
        )
        negatives: list[Unanswerable] = []
        if unanswerable_rows:
            vectors = embedder.embed([q for _, q, _ in unanswerable_rows])
            for (uid, _, kind), vector in zip(unanswerable_rows, vectors, strict=True):
                hits = store.search(name, vector.tolist(), limit=5)
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
                abstain=_abstain_rows(subset_scores, negatives, alpha_list),
                skipped_cal_sizes=skipped,
            )
        )

    classifier = KindClassifier.load()
    groups = [classifier.groups(item.question, item.group) for item in qa_file.items]
    mondrian = evaluate_mondrian(
        scores, groups, alpha_list, splits=splits, seed=seed, max_chunks=max_chunks
    )
    predicted = Counter(g for gs in groups for g in gs)

    argv = sys.argv[1:]
    args = argv[argv.index("coverage") + 1 :] if "coverage" in argv else argv
    command = "covrag eval coverage " + " ".join(args)
    header = [
        f"# Conformal retrieval coverage — collection `{name}`",
        "",
        f"- QA: `{qa}` ({len(qa_file.items)} questions, {len(qa_file.errors)} malformed lines"
        f"{'' if unanswerable is None else f'; unanswerable: `{unanswerable}`, '}"
        f"{'' if unanswerable is None else f'{len(negatives)} questions'})",
        f"- embedder: {settings.embedder} {embedder_model}; store: {settings.store}; "
        f"search_k {search_k}; budget {max_chunks} chunks",
        f"- {splits} seeded splits (seed {seed}) per calibration size; the same splits serve every "
        "α and both rules",
        "- coverage: the held-out question's best gold chunk has similarity ≥ 1−q̂ "
        "(a bridge question's second hop only; either document of a comparison); conformal = "
        "⌈(n+1)(1−α)⌉-th smallest score, naive = CONFLARE's linear percentile (misses dropped)",
        "- chunks: hits with similarity ≥ 1−q̂ per test question, pooled over splits, capped at "
        "the budget; fixed top-k = smallest k whose mean test coverage reaches the conformal "
        "mean; budget full = share of test questions with ≥ budget chunks clearing",
        f"- generated {datetime.now(UTC).isoformat(timespec='seconds')}: `{command}`",
    ]
    sections = ["\n".join(header)]
    for subset in results:
        kinds_text = ", ".join(f"{k} {v}" for k, v in sorted(subset.kinds.items()))
        parts = [f"## {subset.name} ({subset.n_items} questions: {kinds_text})", ""]
        parts += _checks(subset)
        if subset.skipped_cal_sizes:
            parts.append(f"- skipped calibration sizes: {'; '.join(subset.skipped_cal_sizes)}")
        if subset.reports:
            parts += ["", to_markdown(subset.reports)]
        if subset.abstain:
            parts += [
                "",
                f"#### abstain signal (q̂ from all {subset.n_items} {subset.name} questions): "
                "share with no chunk ≥ 1−q̂",
                "",
                _abstain_markdown(subset.abstain),
            ]
        sections.append("\n".join(parts))
    sections.append(
        "\n".join(
            [
                "## Mondrian (group-conditional) against pooled, per true kind",
                "",
                f"Half/half splits ({splits}, seed {seed}); a question's groups are what a "
                "request of it gets (its caller group, else each kind in its set by the "
                "classifier: "
                + ", ".join(f"{g} {n}" for g, n in sorted(predicted.items()))
                + "); its q̂ is the largest of its groups' own, never below the pooled one. "
                "Flagged: the response would say `coverage_guaranteed` (every group's own q̂ "
                f"finite, at most {max_chunks} chunks clear, kind:bridge not in the set).",
                "",
                mondrian_markdown(mondrian),
            ]
        )
    )
    markdown = "\n\n".join(sections) + "\n"

    out.mkdir(parents=True, exist_ok=True)
    plots = [p for subset in results for p in _plot(subset, out)]
    payload = {
        "command": command,
        "collection": name,
        "qa": str(qa),
        "unanswerable": None if unanswerable is None else str(unanswerable),
        "embedder": {"backend": settings.embedder, "model": embedder_model},
        "alphas": alpha_list,
        "splits": splits,
        "seed": seed,
        "max_chunks": max_chunks,
        "search_k": search_k,
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
        json.dumps(_jsonable(payload), indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    (out / "coverage.md").write_text(markdown, encoding="utf-8")
    typer.echo(markdown)
    _echo_err(f"wrote {out / 'coverage.json'}, {out / 'coverage.md'}, {len(plots)} plots")
